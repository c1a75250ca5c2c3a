//! The two checksum-file formats upstream projects publish.

use serde::Serialize;

/// How a checksum file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChecksumFormat {
    /// `sha256sum` output: one `<sha256>  <file name>` line per file (k3s/RKE2
    /// `sha256sum-ARCH.txt`, containerd/Helm `.sha256sum`, runc `runc.sha256sum`). The
    /// entry for the file must be there, exactly once (or repeated with the same digest).
    Sums,
    /// A file of its own holding the digest of one file (dl.k8s.io `.sha256`, crictl
    /// `.sha256`); some projects append the file name (`<sha256>  <name>`), which then must
    /// be the expected one.
    Digest,
}

impl ChecksumFormat {
    pub fn describe(self) -> &'static str {
        match self {
            ChecksumFormat::Sums => "`<sha256>  <name>` lines",
            ChecksumFormat::Digest => "the digest alone",
        }
    }
}

/// Why a checksum file gave no digest for the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChecksumError {
    #[error("the checksum file has no entry for `{entry}`")]
    MissingEntry { entry: String },
    #[error("the checksum file lists `{entry}` twice with different digests")]
    Conflicting { entry: String },
    #[error("line {line} of the checksum file is not `<sha256>  <name>`")]
    Malformed { line: usize },
    #[error("the checksum file holds no sha256 digest")]
    NoDigest,
    #[error("the checksum file is for `{found}`, not `{entry}`")]
    OtherFile { entry: String, found: String },
}

fn is_digest(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The sha256 (lower-case hex) of `entry` in a checksum file's `text`.
pub fn parse(format: ChecksumFormat, text: &str, entry: &str) -> Result<String, ChecksumError> {
    match format {
        ChecksumFormat::Sums => {
            let mut found: Option<String> = None;
            for (i, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let mut parts = line.split_whitespace();
                let (Some(digest), Some(name), None) = (parts.next(), parts.next(), parts.next())
                else {
                    return Err(ChecksumError::Malformed { line: i + 1 });
                };
                if !is_digest(digest) {
                    return Err(ChecksumError::Malformed { line: i + 1 });
                }
                // `sha256sum -b` marks binary mode with `*`; some tools write `./name`.
                let name = name.trim_start_matches('*').trim_start_matches("./");
                if name != entry {
                    continue;
                }
                let digest = digest.to_ascii_lowercase();
                match &found {
                    Some(d) if *d != digest => {
                        return Err(ChecksumError::Conflicting {
                            entry: entry.to_string(),
                        })
                    }
                    _ => found = Some(digest),
                }
            }
            found.ok_or_else(|| ChecksumError::MissingEntry {
                entry: entry.to_string(),
            })
        }
        ChecksumFormat::Digest => {
            let mut parts = text.split_whitespace();
            let digest = parts.next().ok_or(ChecksumError::NoDigest)?;
            if !is_digest(digest) {
                return Err(ChecksumError::NoDigest);
            }
            if let Some(name) = parts.next() {
                let name = name.trim_start_matches('*').trim_start_matches("./");
                if name != entry {
                    return Err(ChecksumError::OtherFile {
                        entry: entry.to_string(),
                        found: name.to_string(),
                    });
                }
            }
            if parts.next().is_some() {
                return Err(ChecksumError::Malformed { line: 1 });
            }
            Ok(digest.to_ascii_lowercase())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn sums_files_give_the_entry_or_fail_naming_it() {
        let text = format!("{A}  k3s\n{B}  k3s-airgap-images-amd64.tar.zst\n");
        assert_eq!(parse(ChecksumFormat::Sums, &text, "k3s").unwrap(), A);
        assert_eq!(
            parse(ChecksumFormat::Sums, &text, "k3s-arm64"),
            Err(ChecksumError::MissingEntry {
                entry: "k3s-arm64".into()
            })
        );
        let twice = format!("{A}  k3s\n{B} *k3s\n");
        assert!(matches!(
            parse(ChecksumFormat::Sums, &twice, "k3s"),
            Err(ChecksumError::Conflicting { .. })
        ));
        assert_eq!(
            parse(
                ChecksumFormat::Sums,
                &format!("{B} *./runc.arm64\n"),
                "runc.arm64"
            )
            .unwrap(),
            B
        );
        assert!(matches!(
            parse(ChecksumFormat::Sums, "not a digest  k3s\n", "k3s"),
            Err(ChecksumError::Malformed { line: 1 })
        ));
    }

    #[test]
    fn digest_files_hold_one_digest() {
        assert_eq!(
            parse(ChecksumFormat::Digest, &format!("{A}\n"), "kubelet").unwrap(),
            A
        );
        assert_eq!(
            parse(
                ChecksumFormat::Digest,
                &format!("{A}  crictl.tgz\n"),
                "crictl.tgz"
            )
            .unwrap(),
            A
        );
        assert!(matches!(
            parse(
                ChecksumFormat::Digest,
                &format!("{A}  other.tgz"),
                "crictl.tgz"
            ),
            Err(ChecksumError::OtherFile { .. })
        ));
        assert_eq!(
            parse(ChecksumFormat::Digest, "<html>", "x"),
            Err(ChecksumError::NoDigest)
        );
        assert_eq!(
            parse(ChecksumFormat::Digest, "", "x"),
            Err(ChecksumError::NoDigest)
        );
    }
}
