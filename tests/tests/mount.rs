//! `ferry mount`: the snapshots as a read-only FUSE filesystem, through
//! the real binaries and the kernel's FUSE (`/dev/fuse`; `fusermount3`
//! from Debian's fuse3, installed by tests/peers.sh), open and sealed.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ferry_tests::tree::{listing, random_bytes, set_xattr};
use ferry_tests::{arg, ok, paired_in, wait_for, Endpoint};

fn need_fuse() {
    assert!(
        Path::new("/dev/fuse").exists(),
        "/dev/fuse is missing: `ferry mount` needs the kernel's FUSE (load the fuse module, or give the container /dev/fuse)"
    );
    let found = Command::new("fusermount3").arg("-V").output();
    assert!(
        found.is_ok(),
        "fusermount3 is missing: tests/peers.sh installs Debian's fuse3"
    );
}

/// Whether `dir` is a mount point now.
fn is_mounted(dir: &Path) -> bool {
    let dir = dir.display().to_string();
    fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(dir.as_str()))
}

/// A running `ferry mount`: should the test fail while it runs, the
/// process is killed and the mount lazily detached, so nothing outlives
/// the test.
struct Mounted {
    child: Child,
    dir: PathBuf,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
            let _ = Command::new("fusermount3")
                .arg("-uz")
                .arg(&self.dir)
                .status();
        }
    }
}

/// `ferry mount` at `dir`, once its tree answers.
fn mount(endpoint: &Endpoint, dir: &Path) -> Mounted {
    let child = endpoint
        .command()
        .args(["mount", arg(dir)])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mounted = Mounted {
        child,
        dir: dir.to_path_buf(),
    };
    wait_for("the mount", Duration::from_secs(60), || {
        dir.join("sets/default/latest")
            .symlink_metadata()
            .ok()
            .map(|_| ())
    });
    mounted
}

fn wait_exit(mounted: &mut Mounted) -> std::process::ExitStatus {
    wait_for("ferry mount to end", Duration::from_secs(60), || {
        mounted.child.try_wait().unwrap()
    })
}

#[test]
fn cp_out_of_the_mount_matches_the_restore_and_the_mount_ends_cleanly() {
    need_fuse();
    for sealed in [false, true] {
        let (_relay, endpoint) = paired_in(sealed);
        let mode = if sealed { "sealed" } else { "open" };
        let work = tempfile::tempdir().unwrap();
        let src = work.path().join("src");
        fs::create_dir_all(src.join("docs/deep/er")).unwrap();
        fs::write(src.join("docs/thesis.txt"), "chapter one").unwrap();
        fs::write(src.join("docs/deep/er/big.bin"), random_bytes(3 << 20, 7)).unwrap();
        fs::write(src.join("docs/deep/small.bin"), random_bytes(1000, 8)).unwrap();
        fs::set_permissions(
            src.join("docs/deep/small.bin"),
            fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        std::os::unix::fs::symlink("docs/thesis.txt", src.join("latest-thesis")).unwrap();
        set_xattr(&src.join("docs/thesis.txt"), "user.origin", b"the lab");
        endpoint.backup_json(&[arg(&src)]);
        fs::write(src.join("docs/thesis.txt"), "chapter one, and two").unwrap();
        endpoint.backup_json(&[arg(&src)]);

        let mnt = work.path().join("mnt");
        fs::create_dir(&mnt).unwrap();
        let mut child = mount(&endpoint, &mnt);
        let set = mnt.join("sets/default");
        let mut names: Vec<String> = fs::read_dir(&set)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names.len(), 3, "{mode}: {names:?}");
        assert_eq!(names[2], "latest", "{mode}");
        assert_eq!(
            fs::read_link(set.join("latest")).unwrap(),
            PathBuf::from(&names[1]),
            "{mode}: latest names the newest"
        );
        let inside = |snapshot: &str| set.join(snapshot).join(src.strip_prefix("/").unwrap());
        // The older snapshot holds the older text.
        assert_eq!(
            fs::read_to_string(inside(&names[0]).join("docs/thesis.txt")).unwrap(),
            "chapter one",
            "{mode}"
        );
        // Two files open at once, read in turns.
        {
            use std::io::Read;
            let mut a = fs::File::open(inside("latest").join("docs/deep/er/big.bin")).unwrap();
            let mut b = fs::File::open(inside("latest").join("docs/deep/small.bin")).unwrap();
            let (mut x, mut y) = (vec![0; 4096], Vec::new());
            a.read_exact(&mut x).unwrap();
            b.read_to_end(&mut y).unwrap();
            assert_eq!(x, random_bytes(3 << 20, 7)[..4096], "{mode}");
            assert_eq!(y, random_bytes(1000, 8), "{mode}");
        }
        // Read-only.
        let written = fs::write(inside("latest").join("docs/thesis.txt"), "x");
        assert!(written.is_err(), "{mode}: the mount took a write");

        // cp -a out of the mount is the restore, byte for byte.
        let copied = work.path().join("copied");
        let cp = Command::new("cp")
            .arg("-a")
            .arg(inside("latest"))
            .arg(&copied)
            .output()
            .unwrap();
        assert!(
            cp.status.success(),
            "{mode}: {}",
            String::from_utf8_lossy(&cp.stderr)
        );
        let restored = work.path().join("restored");
        ok(endpoint.ferry(&[
            "restore",
            "--map-from",
            arg(&src),
            "--map-to",
            arg(&restored),
        ]));
        // Bytes, kinds, modes, times, owners, link targets, user xattrs.
        assert_eq!(listing(&copied), listing(&restored), "{mode}");
        assert!(
            listing(&copied)[b"docs/thesis.txt".as_slice()]
                .xattrs
                .contains(&(b"user.origin".to_vec(), b"the lab".to_vec())),
            "{mode}: the mount shows extended attributes"
        );

        // A backup made while mounted shows up, and latest moves to it.
        fs::write(src.join("docs/fresh.txt"), "made after the mount").unwrap();
        let third = endpoint.backup_json(&[arg(&src)])["snapshot"].to_string();
        wait_for(
            "the new snapshot in the mount",
            Duration::from_secs(120),
            || {
                let _ = fs::read_dir(&set).ok()?.count();
                let latest = fs::read_link(set.join("latest")).ok()?;
                latest
                    .to_string_lossy()
                    .starts_with(&format!("{third}-"))
                    .then_some(())
            },
        );
        assert_eq!(
            fs::read_to_string(inside("latest").join("docs/fresh.txt")).unwrap(),
            "made after the mount",
            "{mode}"
        );

        // fusermount -u ends it: exit 0, nothing mounted.
        let unmounted = Command::new("fusermount3")
            .arg("-u")
            .arg(&mnt)
            .output()
            .unwrap();
        assert!(
            unmounted.status.success(),
            "{mode}: {}",
            String::from_utf8_lossy(&unmounted.stderr)
        );
        assert!(wait_exit(&mut child).success(), "{mode}");
        assert!(!is_mounted(&mnt), "{mode}");

        // So does SIGTERM, and it unmounts.
        let mut child = mount(&endpoint, &mnt);
        assert!(is_mounted(&mnt), "{mode}");
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(child.child.id() as i32).unwrap(),
            rustix::process::Signal::TERM,
        )
        .unwrap();
        assert!(wait_exit(&mut child).success(), "{mode}");
        assert!(!is_mounted(&mnt), "{mode}: SIGTERM left it mounted");
    }
}
