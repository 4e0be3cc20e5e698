//! The endpoint's pipelines through the pair harness (`pair/`): backup,
//! restore, verify, the uploader and the fetcher against the relay's real
//! session service over an in-process pipe, no socket and no process.

mod pair;

use pair::{noise, same_files, write_tree, Pair};

#[tokio::test]
async fn a_backup_and_its_restore_are_identical() {
    let pair = Pair::new();
    let src = pair.path("src");
    write_tree(
        &src,
        &[("a.txt", b"hello".to_vec()), ("d/b.bin", noise(1, 300_000))],
    );
    let summary = pair.backup_once("docs", &[&src]).await;
    assert_eq!(summary.files, 2);
    let out = pair.path("out");
    let mut client = pair.connect().await;
    pair.restore(&mut client, "docs", &src, &out).await.unwrap();
    assert!(same_files(&src, &out));
}
