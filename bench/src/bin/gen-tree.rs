//! Deterministic benchmark data.
//!
//! `gen-tree tree DIR FILES TOTAL_BYTES SEED`: text-like files (words from a
//! small vocabulary, so they compress about as source code and logs do) with
//! log-normal sizes between 100 B and 1 MiB, about 50 per directory.
//! `gen-tree mutate DIR PERMILLE_MODIFY PERMILLE_DELETE PERMILLE_ADD SEED`:
//! rewrites a stretch inside some files, deletes some, adds new ones.
//! `gen-tree edit FILE OVERWRITES SEED`: random 4 KiB overwrites and one
//! inserted byte in the middle of a big file.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

const WORDS: &[&str] = &[
    "the",
    "relay",
    "backup",
    "chunk",
    "delta",
    "session",
    "error",
    "info",
    "warn",
    "let",
    "fn",
    "struct",
    "impl",
    "return",
    "value",
    "index",
    "buffer",
    "request",
    "client",
    "server",
    "time",
    "2026-11-26T12:00:00Z",
    "GET",
    "/api/v1/items",
    "200",
    "404",
    "user",
    "id",
    "=",
    "{",
    "}",
    ";",
    "if",
    "else",
    "for",
    "while",
    "match",
    "Ok",
    "Err",
    "Some",
    "None",
    "self",
    "pub",
    "mod",
    "use",
];

fn text(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    while out.len() < len {
        let word = WORDS[rng.below(WORDS.len() as u64) as usize];
        out.extend_from_slice(word.as_bytes());
        out.push(if rng.below(12) == 0 { b'\n' } else { b' ' });
        if rng.below(40) == 0 {
            out.extend_from_slice(format!("{}", rng.next() % 100_000).as_bytes());
        }
    }
    out.truncate(len);
    out
}

/// Log-normal size between 100 B and 1 MiB, median about 8 KiB.
fn size(rng: &mut Rng) -> usize {
    let (u1, u2) = (rng.unit().max(1e-12), rng.unit());
    let normal = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
    ((9.0 + 1.8 * normal).exp() as usize).clamp(100, 1 << 20)
}

fn tree(dir: &Path, files: usize, total: u64, seed: u64) -> Result<()> {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut sizes: Vec<usize> = (0..files).map(|_| size(&mut rng)).collect();
    let sum: u64 = sizes.iter().map(|s| *s as u64).sum();
    let scale = total as f64 / sum as f64;
    for s in &mut sizes {
        *s = ((*s as f64 * scale) as usize).clamp(100, 1 << 20);
    }
    for (i, len) in sizes.into_iter().enumerate() {
        let sub = dir.join(format!("d{:03}/s{:02}", i / 50 / 20, (i / 50) % 20));
        fs::create_dir_all(&sub)?;
        fs::write(sub.join(format!("f{i:05}.txt")), text(&mut rng, len))?;
    }
    Ok(())
}

fn files_below(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    entries.sort();
    for path in entries {
        if path.is_dir() {
            files_below(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

fn mutate(dir: &Path, modify: u64, delete: u64, add: u64, seed: u64) -> Result<()> {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut files = Vec::new();
    files_below(dir, &mut files)?;
    let n = files.len() as u64;
    for path in &files {
        let roll = rng.below(1000);
        if roll < delete {
            fs::remove_file(path)?;
        } else if roll < delete + modify {
            let mut data = fs::read(path)?;
            let at = rng.below(data.len() as u64) as usize;
            let len = (data.len() / 20).clamp(16, 4096).min(data.len() - at);
            data[at..at + len].copy_from_slice(&text(&mut rng, len));
            fs::write(path, data)?;
        }
    }
    for i in 0..n * add / 1000 {
        let sub = dir.join(format!("new/n{:02}", i / 50));
        fs::create_dir_all(&sub)?;
        let len = size(&mut rng);
        fs::write(sub.join(format!("added{i:05}.txt")), text(&mut rng, len))?;
    }
    Ok(())
}

fn edit(file: &Path, overwrites: u64, seed: u64) -> Result<()> {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut f = fs::OpenOptions::new().read(true).write(true).open(file)?;
    let len = f.metadata()?.len();
    for _ in 0..overwrites {
        let block: Vec<u8> = (0..512).flat_map(|_| rng.next().to_le_bytes()).collect();
        f.seek(SeekFrom::Start(rng.below(len - 4096)))?;
        f.write_all(&block)?;
    }
    // One byte inserted in the middle: rewrite the second half shifted by one.
    let middle = len / 2;
    f.seek(SeekFrom::Start(middle))?;
    let mut tail = Vec::new();
    f.read_to_end(&mut tail)?;
    f.seek(SeekFrom::Start(middle))?;
    f.write_all(&[0x42])?;
    f.write_all(&tail)?;
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| {
        args.get(i)
            .with_context(|| "usage: see the source's header".to_string())
    };
    let num = |i: usize| -> Result<u64> { Ok(arg(i)?.parse()?) };
    match arg(1)?.as_str() {
        "tree" => tree(Path::new(arg(2)?), num(3)? as usize, num(4)?, num(5)?),
        "mutate" => mutate(Path::new(arg(2)?), num(3)?, num(4)?, num(5)?, num(6)?),
        "edit" => edit(Path::new(arg(2)?), num(3)?, num(4)?),
        other => bail!("unknown command {other:?}: tree, mutate or edit"),
    }
}
