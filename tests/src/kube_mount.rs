//! A directory laid out the way the kubelet mounts a ConfigMap or Secret volume: the files
//! live in a timestamped `..<time>` directory, `..data` is a symlink to it, and every key is a
//! symlink `key -> ..data/key`. An update writes a new timestamped directory and swaps
//! `..data` atomically (a temporary symlink renamed over it), as the kubelet's AtomicWriter
//! does, so a reader sees the old set or the new set, never a mix.

use std::collections::BTreeMap;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

pub struct KubeMount {
    dir: PathBuf,
    version: u32,
}

impl KubeMount {
    /// Creates the volume at `dir` (made if missing) holding `files`.
    pub fn create(dir: &Path, files: &BTreeMap<String, Vec<u8>>) -> Result<KubeMount> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut m = KubeMount {
            dir: dir.to_path_buf(),
            version: 0,
        };
        m.update(files)?;
        Ok(m)
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Replaces the volume's contents with `files`, the kubelet's way.
    pub fn update(&mut self, files: &BTreeMap<String, Vec<u8>>) -> Result<()> {
        self.version += 1;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let stamp = format!("..{nanos}.{}", self.version);
        let versioned = self.dir.join(&stamp);
        std::fs::create_dir(&versioned)?;
        for (key, value) in files {
            anyhow::ensure!(!key.contains('/') && !key.starts_with(".."), "bad key {key:?}");
            std::fs::write(versioned.join(key), value)?;
        }
        let old = std::fs::read_link(self.dir.join("..data")).ok();
        let tmp = self.dir.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        symlink(&stamp, &tmp)?;
        std::fs::rename(&tmp, self.dir.join("..data")).context("swapping ..data")?;
        for key in files.keys() {
            let link = self.dir.join(key);
            if std::fs::symlink_metadata(&link).is_err() {
                symlink(Path::new("..data").join(key), &link)?;
            }
        }
        for entry in std::fs::read_dir(&self.dir)?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with("..") && !files.contains_key(&name) {
                std::fs::remove_file(entry.path())?;
            }
        }
        if let Some(old) = old {
            std::fs::remove_dir_all(self.dir.join(old))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_atomic_update() {
        let dir = crate::TempDir::new("kube-mount").unwrap();
        let root = dir.join("vol");
        let files = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect::<BTreeMap<_, _>>()
        };
        let mut m = KubeMount::create(&root, &files(&[("a", "1"), ("b", "2")])).unwrap();
        assert_eq!(std::fs::read_link(root.join("a")).unwrap(), Path::new("..data/a"));
        assert!(std::fs::read_link(root.join("..data"))
            .unwrap()
            .to_string_lossy()
            .starts_with(".."));
        assert_eq!(std::fs::read_to_string(root.join("a")).unwrap(), "1");
        let first = std::fs::read_link(root.join("..data")).unwrap();
        m.update(&files(&[("a", "10"), ("c", "3")])).unwrap();
        assert_eq!(std::fs::read_to_string(root.join("a")).unwrap(), "10");
        assert_eq!(std::fs::read_to_string(root.join("c")).unwrap(), "3");
        assert!(
            std::fs::symlink_metadata(root.join("b")).is_err(),
            "removed keys disappear"
        );
        assert!(!root.join(first).exists(), "the old version is removed");
    }
}
