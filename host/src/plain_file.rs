//! Reading a file the operator names (a module, a secret, a config) that
//! should be a plain file of bounded size. Opened without blocking and
//! checked before a byte is read: a FIFO nobody writes to would hang a
//! start or a reload for good, and `/dev/zero` would be read until memory
//! runs out.

use std::io::{Error, ErrorKind, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The bytes of `path`, which must be a plain file of at most `max` bytes.
pub fn read(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    // O_NONBLOCK: opening a FIFO for reading otherwise waits for a writer.
    // On a plain file it changes nothing.
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path)?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(Error::new(ErrorKind::InvalidInput, "it is not a plain file"));
    }
    if metadata.len() > max {
        return Err(Error::new(ErrorKind::InvalidInput, format!("it is {} bytes; at most {max} are read", metadata.len())));
    }
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    // `take`: a file that grows while it is read stops at the cap too.
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(Error::new(ErrorKind::InvalidInput, format!("it grew past {max} bytes while it was read")));
    }
    Ok(bytes)
}

/// `read`, as UTF-8 text.
pub fn read_text(path: &Path, max: u64) -> std::io::Result<String> {
    String::from_utf8(read(path, max)?).map_err(|_| Error::new(ErrorKind::InvalidData, "it is not UTF-8 text"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_plain_file_within_its_bound_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "s3cret-value\n").unwrap();
        assert_eq!(read_text(&file, 64).unwrap(), "s3cret-value\n");
        assert!(read(&file, 4).unwrap_err().to_string().contains("13 bytes; at most 4"));
        assert!(read(Path::new("/dev/zero"), 64).unwrap_err().to_string().contains("not a plain file"));
        assert!(read(dir.path(), 64).is_err(), "a folder");
        // A FIFO nobody writes to: refused at once, not waited on.
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(made.success());
        assert!(read(&fifo, 64).unwrap_err().to_string().contains("not a plain file"));
        std::fs::write(dir.path().join("latin1"), [0xe9]).unwrap();
        assert!(read_text(&dir.path().join("latin1"), 64).is_err());
    }
}
