//! Unit tests of segments and handles: what a received handle may and may not open.

use std::os::fd::AsRawFd;

use super::*;
use crate::codec;

/// The wire layout of a handle, spelled as a tuple: (pid, fd, inode, id, kind index, len).
/// SegmentKind indexes: Bytes 0, Array 1.
type Fake = (u32, i32, u64, u64, u32, u64);

fn decode_bytes(w: Fake) -> Result<SharedBytes, crate::TaskError> {
    codec::decode::<SharedBytes>(&codec::encode(&w).unwrap())
}

/// The typed error a forged or stale handle gives: `Gone` or `Mismatch`, never text.
fn handle_error(r: Result<impl std::fmt::Debug, crate::TaskError>) -> HandleError {
    match r {
        Err(crate::TaskError::Handle(h)) => h,
        other => panic!("expected TaskError::Handle, got {other:?}"),
    }
}

#[test]
fn a_forged_handle_never_opens_a_non_poolrun_fd() {
    let me = std::process::id();
    // A regular file and a pipe of ours: readable through /proc, but not poolrun memfds.
    let file = std::fs::File::open("/proc/self/stat").unwrap();
    let (r, _w) = nix::unistd::pipe().unwrap();
    for fd in [0, 1, 2, file.as_raw_fd(), r.as_raw_fd(), 9999] {
        let e = handle_error(decode_bytes((me, fd, 1, 42, 0, 10)));
        assert!(
            matches!(e, HandleError::Gone(_) | HandleError::Mismatch(_)),
            "fd {fd}: {e:?}"
        );
    }
    // A process that does not exist.
    assert!(matches!(
        handle_error(decode_bytes((u32::MAX - 1, 3, 1, 42, 0, 10))),
        HandleError::Gone(_)
    ));
}

#[test]
fn a_forged_handle_to_a_real_segment_is_checked() {
    let b = SharedBytes::from_slice(b"hello world").unwrap();
    let w: Fake = codec::decode(&codec::encode(&b).unwrap()).unwrap();
    // The genuine handle works, in this process from the registry...
    assert_eq!(&decode_bytes(w).unwrap()[..], b"hello world");
    // ...but wrong kind, wrong id, wrong length or wrong inode do not.
    // (A forged id or inode reads as "that fd is now something else": Gone or Mismatch,
    // depending on which check meets it first.)
    let mismatch = |r| {
        matches!(
            handle_error(r),
            HandleError::Mismatch(_) | HandleError::Gone(_)
        )
    };
    assert!(matches!(
        handle_error(codec::decode::<SharedArray<u8>>(
            &codec::encode(&w).unwrap()
        )),
        HandleError::Mismatch(_)
    ));
    assert!(mismatch(decode_bytes((w.0, w.1, w.2, w.3 ^ 1, w.4, w.5))));
    assert!(mismatch(decode_bytes((w.0, w.1, w.2, w.3, w.4, w.5 + 1))));
    assert!(mismatch(decode_bytes((
        w.0,
        w.1,
        w.2 ^ 1,
        w.3 ^ 2,
        w.4,
        w.5
    ))));
    // Another kind (index 7: Barrier) is a mismatch; an unknown kind index does not even
    // decode as a handle: a plain codec error.
    assert!(matches!(
        handle_error(decode_bytes((w.0, w.1, w.2, w.3, 7, w.5))),
        HandleError::Mismatch(_)
    ));
    assert!(matches!(
        decode_bytes((w.0, w.1, w.2, w.3, 200, w.5)),
        Err(crate::TaskError::Codec(_))
    ));
}

#[test]
fn segments_are_0600_memfds_never_in_dev_shm() {
    let b = SharedBytes::from_slice(&[1, 2, 3]).unwrap();
    let w: Fake = codec::decode(&codec::encode(&b).unwrap()).unwrap();
    let link = std::fs::read_link(format!("/proc/self/fd/{}", w.1)).unwrap();
    let link = link.to_string_lossy().into_owned();
    assert!(link.starts_with("/memfd:poolrun-"), "{link}");
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(format!("/proc/self/fd/{}", w.1)).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let in_dev_shm = std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .any(|e| e.file_name().to_string_lossy().contains("poolrun"))
        })
        .unwrap_or(false);
    assert!(!in_dev_shm);
}

#[test]
fn clones_share_and_pins_drain() {
    let a = SharedArray::<(u32, f32)>::new(3).unwrap();
    let b = a.clone();
    a.set(1, (7, 0.5));
    assert_eq!(b.get(1), (7, 0.5));
    let bytes = codec::encode(&a).unwrap();
    let c: SharedArray<(u32, f32)> = codec::decode(&bytes).unwrap();
    assert_eq!(c.get(1), (7, 0.5));
    // Dropping every handle (and the pin, released once the handle was received) closes
    // the segment: no fd of its id remains.
    let id = format!("{a:?}");
    let id = id
        .split("id: ")
        .nth(1)
        .map(|x| x[..16].to_string())
        .unwrap();
    drop((a, b, c));
    let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let open = std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .any(|l| l.to_string_lossy().contains(&id));
        if !open {
            break;
        }
        assert!(std::time::Instant::now() < end, "segment {id} still open");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[test]
#[should_panic(expected = "out of bounds")]
fn index_out_of_bounds_panics_like_a_slice() {
    let a = SharedArray::<u8>::new(2).unwrap();
    a.get(2);
}
