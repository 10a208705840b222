//! Making a new store file so that no crash leaves a half-made one at its path.
//!
//! redb initialises a new file in place: it sizes the file, writes a header without its magic
//! number, syncs, and only then writes the magic number. A process killed between the two
//! (a window of a millisecond or so, on the first start only) leaves a file that every later
//! open refuses ("Not a redb database: magic number mismatch"): the server could not restart
//! on its own, and a backup cut off mid-copy would look like a file. So a new file is made
//! beside its path under a temporary name and linked into place once it is whole: the path
//! holds either nothing or a complete file.
//!
//! Why a hard link rather than a rename: `link(2)` fails when the path exists, so two processes
//! creating the same store at once cannot replace a file the other has already opened (a
//! rename would, and the first would go on writing to an unlinked inode). Where the file
//! system has no hard links, a rename is the fallback.

use mailroom_core::error::StorageError;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// What temporary names start with after the `.{file name}` they belong to.
const PARTIAL: &str = ".partial-";

/// How a [`create_beside`] ended.
#[derive(Debug)]
pub(crate) enum Created<T> {
    /// The file made by `make` is now at the path.
    Linked(T),
    /// Something was at the path already; what `make` made was thrown away.
    Existed,
}

/// Makes a new file for `path` with `make` (given the temporary path to create), then puts it
/// at `path` unless something is there by then. Leftovers of earlier attempts that were killed
/// are removed first.
pub(crate) fn create_beside<T>(
    path: &Path,
    mut make: impl FnMut(&Path) -> Result<T, StorageError>,
) -> Result<Created<T>, StorageError> {
    let (dir, name) = split(path)?;
    sweep(&dir, &name);
    // A concurrent opening of the same store may sweep our temporary file before it is linked
    // (it cannot tell it from a killed process's); then the link finds nothing and we make it
    // again. Three rounds lose only to a pathological race, which is reported, not looped on.
    for _ in 0..3 {
        if path.try_exists().map_err(|e| io(path, e))? {
            return Ok(Created::Existed);
        }
        let tmp = dir.join(temp_name(&name));
        let made = match make(&tmp) {
            Ok(made) => made,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        let placed = match std::fs::hard_link(&tmp, path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let _ = std::fs::remove_file(&tmp);
                continue;
            }
            // No hard links here (some network and FAT file systems): rename, which cannot
            // refuse an existing path, after checking once more that there is none.
            Err(_) if !path.try_exists().map_err(|e| io(path, e))? => std::fs::rename(&tmp, path).map(|()| true),
            Err(_) => Ok(false),
        };
        let _ = std::fs::remove_file(&tmp);
        return match placed.map_err(|e| io(path, e))? {
            true => {
                sync_dir(&dir).map_err(|e| io(&dir, e))?;
                Ok(Created::Linked(made))
            }
            false => Ok(Created::Existed),
        };
    }
    Err(StorageError::Backend(format!(
        "cannot create {}: its temporary file kept disappearing (another process is creating it)",
        path.display()
    )))
}

/// The directory and file name of `path` (the directory `.` for a bare name).
fn split(path: &Path) -> Result<(PathBuf, String), StorageError> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| StorageError::Backend(format!("{} does not name a file", path.display())))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((dir, name.to_string()))
}

/// `.{name}.partial-{pid}-{n}`: hidden, unique within the process and across processes.
fn temp_name(name: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(".{name}{PARTIAL}{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Whether `file` is one of [`temp_name`]'s names for `name`. Strict, so that no file of the
/// user's is ever taken for one.
fn is_temp_of(file: &str, name: &str) -> bool {
    let Some(rest) = file.strip_prefix('.').and_then(|f| f.strip_prefix(name)).and_then(|f| f.strip_prefix(PARTIAL))
    else {
        return false;
    };
    let mut parts = rest.split('-');
    let digits = |p: Option<&str>| p.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    digits(parts.next()) && digits(parts.next()) && parts.next().is_none()
}

/// Removes the temporary files of `name` in `dir`: a killed creation leaves one behind. One
/// being made right now by another process may go too; that process then makes it again.
fn sweep(dir: &Path, name: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        if entry.file_name().to_str().is_some_and(|f| is_temp_of(f, name)) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// [`sweep`] for the file at `path`.
pub(crate) fn sweep_beside(path: &Path) {
    if let Ok((dir, name)) = split(path) {
        sweep(&dir, &name);
    }
}

/// Makes a new directory entry durable (a link is only as durable as its directory).
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::fs::File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

fn io(path: &Path, e: std::io::Error) -> StorageError {
    StorageError::Backend(format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_its_own_temporary_names_are_taken_for_leftovers() {
        let t = temp_name("mail.redb");
        assert!(is_temp_of(&t, "mail.redb"), "{t}");
        assert!(!is_temp_of(&t, "mail.red"));
        for other in [
            "mail.redb",
            ".mail.redb.partial-",
            ".mail.redb.partial-12",
            ".mail.redb.partial-12-",
            ".mail.redb.partial-12-3-4",
            ".mail.redb.partial-x-3",
            ".mail.redb.partial-1 -3",
            "mail.redb.partial-12-3",
            ".other.redb.partial-12-3",
        ] {
            assert!(!is_temp_of(other, "mail.redb"), "{other}");
        }
    }

    #[test]
    fn a_file_already_there_is_kept_and_the_new_one_thrown_away() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        std::fs::write(&path, b"theirs").unwrap();
        let mut calls = 0;
        let made = create_beside(&path, |_| {
            calls += 1;
            Ok(())
        })
        .unwrap();
        assert!(matches!(made, Created::Existed));
        assert_eq!(calls, 0, "nothing is made for a path that exists");
        assert_eq!(std::fs::read(&path).unwrap(), b"theirs");
    }

    #[test]
    fn a_path_that_appears_while_the_file_is_made_is_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let made = create_beside(&path, |tmp| {
            std::fs::write(tmp, b"ours").unwrap();
            // Another process wins the race meanwhile.
            std::fs::write(&path, b"theirs").unwrap();
            Ok(())
        })
        .unwrap();
        assert!(matches!(made, Created::Existed));
        assert_eq!(std::fs::read(&path).unwrap(), b"theirs");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "the temporary file is gone");
    }

    #[test]
    fn a_killed_attempt_leaves_nothing_at_the_path_and_its_leftover_is_swept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        // What a process killed inside `make` leaves: a half-made temporary file.
        let leftover = dir.path().join(format!(".s.redb{PARTIAL}999999-0"));
        std::fs::write(&leftover, [0u8; 4096]).unwrap();
        let mine = dir.path().join("s.redb.partial-1-1");
        std::fs::write(&mine, b"the user's").unwrap();
        assert!(!path.exists());
        let made = create_beside(&path, |tmp| {
            std::fs::write(tmp, b"whole").unwrap();
            Ok(7)
        })
        .unwrap();
        assert!(matches!(made, Created::Linked(7)));
        assert_eq!(std::fs::read(&path).unwrap(), b"whole");
        assert!(!leftover.exists(), "the leftover is swept");
        assert!(mine.exists(), "a file of the user's is not");
        let mut names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().map(|e| e.file_name()).collect();
        names.sort();
        assert_eq!(names, ["s.redb", "s.redb.partial-1-1"]);
    }

    #[test]
    fn a_failed_make_leaves_no_file_anywhere() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let err = create_beside(&path, |tmp| -> Result<(), StorageError> {
            std::fs::write(tmp, b"half").unwrap();
            Err(StorageError::Backend("disk full".into()))
        })
        .unwrap_err();
        assert!(err.to_string().contains("disk full"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_temporary_file_swept_by_a_concurrent_opening_is_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let mut calls = 0;
        let made = create_beside(&path, |tmp| {
            calls += 1;
            std::fs::write(tmp, b"whole").unwrap();
            if calls == 1 {
                sweep(tmp.parent().unwrap(), "s.redb");
            }
            Ok(calls)
        })
        .unwrap();
        assert!(matches!(made, Created::Linked(2)));
        assert_eq!(std::fs::read(&path).unwrap(), b"whole");
    }

    #[test]
    fn a_bare_name_is_made_in_the_working_directory() {
        assert_eq!(split(Path::new("s.redb")).unwrap(), (PathBuf::from("."), "s.redb".to_string()));
        assert!(split(Path::new("/")).is_err());
    }
}
