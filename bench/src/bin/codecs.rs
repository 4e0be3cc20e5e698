//! `codecs FILE`: compression speed and ratio of each method ferry can use,
//! on FILE cut in 1 MiB pieces (the size of a `PutChunks` batch) and in
//! 64 KiB pieces (a stored chunk). Medians of 5 passes.

use std::time::Instant;

use anyhow::{Context, Result};
use ferry_protocol::compress::{compress_with, decompress, Method};

fn main() -> Result<()> {
    let path = std::env::args().nth(1).context("usage: codecs FILE")?;
    let data = std::fs::read(&path).with_context(|| format!("cannot read {path}"))?;
    let methods = [
        ("lz4", Method::Lz4),
        ("zstd-1", Method::Zstd(1)),
        ("zstd-3", Method::Zstd(3)),
        ("zstd-9", Method::Zstd(9)),
        ("zstd-15", Method::Zstd(15)),
        ("zstd-19", Method::Zstd(19)),
        ("zstd--3", Method::Zstd(-3)),
    ];
    println!("| method | piece | ratio | compress MB/s | decompress MB/s |");
    println!("| --- | --- | --- | --- | --- |");
    for piece in [1 << 20, 64 << 10] {
        for (name, method) in methods {
            let mut packed_len = 0;
            let mut c_times = Vec::new();
            let mut d_times = Vec::new();
            for _ in 0..5 {
                let started = Instant::now();
                let packed: Vec<_> = data
                    .chunks(piece)
                    .map(|p| compress_with(method, p))
                    .collect();
                c_times.push(started.elapsed().as_secs_f64());
                packed_len = packed.iter().map(|(_, p)| p.len()).sum::<usize>();
                let started = Instant::now();
                for (codec, p) in packed {
                    decompress(codec, p, piece)?;
                }
                d_times.push(started.elapsed().as_secs_f64());
            }
            c_times.sort_by(f64::total_cmp);
            d_times.sort_by(f64::total_cmp);
            let mb = data.len() as f64 / 1e6;
            println!(
                "| {name} | {} KiB | {:.2} | {:.0} | {:.0} |",
                piece >> 10,
                data.len() as f64 / packed_len as f64,
                mb / c_times[2],
                mb / d_times[2]
            );
        }
    }
    Ok(())
}
