//! Unfinished or damaged sled snapshots are set aside before sled opens a store.
//!
//! Why this exists: sled 0.34 writes a snapshot of its page table as
//! `snap.<lsn>.generating`, syncs it, and renames it to `snap.<lsn>`. When the
//! disk fills up during that write (or the process dies in it), the
//! `.generating` file stays, often empty. At the next open sled takes the
//! last name in sorted order among every file starting with `snap.` (its
//! `Config::get_snapshot_files` does not leave the `.generating` ones out),
//! finds it short or its CRC wrong, and refuses the whole store as corrupt:
//! a small state filesystem that filled up once then lost its backlog at the
//! next start (it was moved aside as damaged) although the log held every
//! reading. A snapshot is only an index of the log: without it sled replays
//! the log (from the previous snapshot, or from the start), so setting a bad
//! one aside loses nothing.
//!
//! What counts as bad is what sled's `read_snapshot` rejects: 12 bytes or
//! fewer, or a CRC-32 (IEEE, little-endian, over all but the last 12 bytes)
//! that does not match. Unfinished files are removed; complete but damaged
//! ones are renamed `unused-snap.*` (kept for a post-mortem; sled ignores
//! them, salvage still scans them).

use std::path::{Path, PathBuf};

/// Removes, in `dir`, every `snap.*.generating` file (never finished, so
/// never usable) and then sets aside, newest first, every complete snapshot
/// sled would reject, until the newest one left is valid (or none is left).
/// Returns the names of the complete snapshots set aside.
pub(super) fn set_aside_bad(dir: &Path) -> Vec<String> {
    let mut moved = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return moved };
    let mut snaps: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("snap.") && !n.ends_with(".in___motion")))
        .collect();
    // sled takes the last name in this order.
    snaps.sort();
    while let Some(newest) = snaps.pop() {
        let name = newest.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        let unfinished = name.ends_with(".generating");
        if !unfinished && std::fs::read(&newest).is_ok_and(|b| valid(&b)) {
            break;
        }
        if unfinished {
            // Never a snapshot sled could use: removed. (sled leaves a new
            // one at every open that fails on a full disk.)
            if std::fs::remove_file(&newest).is_err() {
                break;
            }
            tracing::debug!("removed an unfinished sled snapshot {}", newest.display());
            continue;
        }
        let to = dir.join(format!("unused-{name}"));
        match std::fs::rename(&newest, &to) {
            Ok(()) => moved.push(name),
            Err(e) => {
                tracing::debug!("cannot set the sled snapshot {} aside ({e})", newest.display());
                break;
            }
        }
    }
    moved
}

/// Whether sled 0.34's `read_snapshot` accepts these bytes.
fn valid(b: &[u8]) -> bool {
    let len = b.len();
    if len <= 12 {
        return false;
    }
    let expected = u32::from_le_bytes([b[len - 4], b[len - 3], b[len - 2], b[len - 1]]);
    crc32(&b[..len - 12]) == expected
}

/// CRC-32 (IEEE 802.3, reflected, as crc32fast computes it), bit by bit:
/// snapshots are a few KiB and this runs once per open.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(body: &[u8]) -> Vec<u8> {
        let mut out = body.to_vec();
        out.extend((body.len() as u64).to_le_bytes());
        out.extend(crc32(body).to_le_bytes());
        out
    }

    #[test]
    fn crc32_is_the_ieee_one() {
        // The standard check value of CRC-32/ISO-HDLC.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn unfinished_and_damaged_snapshots_go_and_a_good_one_stays() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("snap.0000000000000100"), snapshot(b"older, good")).unwrap();
        let mut torn = snapshot(b"newer, torn by a full disk");
        torn[3] ^= 1;
        std::fs::write(d.path().join("snap.0000000000000200"), torn).unwrap();
        std::fs::write(d.path().join("snap.0000000000000300.generating"), b"").unwrap();
        std::fs::write(d.path().join("db"), b"log").unwrap();
        let moved = set_aside_bad(d.path());
        assert_eq!(moved, vec!["snap.0000000000000200"]);
        assert!(!d.path().join("snap.0000000000000300.generating").exists());
        assert!(d.path().join("snap.0000000000000100").exists());
        assert!(d.path().join("unused-snap.0000000000000200").exists());
        assert!(d.path().join("db").exists());
        assert!(set_aside_bad(d.path()).is_empty(), "nothing more to do");
    }
}
