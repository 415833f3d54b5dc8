//! What a path in the config may point at: checks of the file system that validation runs, so that a
//! config naming the wrong thing is refused with its key and line before anything is opened.

use std::path::Path;

/// The first bytes of every redb 2 database file. Only a file that starts with them was ever a queue.
pub const REDB_MAGIC: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];

/// Why the thing at `path` is not an event queue that camclassd may open, create or move aside, if it is
/// not: not a regular file (a device, a folder, a FIFO), or a non-empty file without redb's header (a
/// config, a log, someone's data). A missing or empty file is fine: the queue is created there. A path that
/// cannot be read is left for the open to report (with its permission or disk advice).
pub fn foreign(path: &Path) -> Option<String> {
    use std::io::Read;
    use std::os::unix::fs::FileTypeExt;
    let meta = std::fs::metadata(path).ok()?;
    let kind = meta.file_type();
    let what = if kind.is_dir() {
        "a folder"
    } else if kind.is_block_device() || kind.is_char_device() {
        "a device"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if meta.len() == 0 {
        return None;
    } else {
        let mut head = [0u8; REDB_MAGIC.len()];
        let n = std::fs::File::open(path).and_then(|mut f| f.read(&mut head)).ok()?;
        if n == head.len() && head == REDB_MAGIC {
            return None;
        }
        "a file that is not a camclassd event queue (no redb header)"
    };
    Some(format!("is {what}; camclassd never replaces it"))
}
