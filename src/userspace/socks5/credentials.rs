//! The SOCKS5 proxy's RFC 1929 credentials: generated on the first start into an owner-only
//! file of the state directory (`socks5.credentials`, mode 0600) and reused afterwards. The
//! file holds one line, `USERNAME:PASSWORD`, so a local client can build a proxy URL from it:
//! `curl --proxy "socks5h://$(cat ~/.pilot/socks5.credentials)@127.0.0.1:1080" ...`.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rand_core::RngCore;

use super::wire::AuthRequest;
use crate::state::files::{open_private, Access};
use crate::state::paths::write_private_atomic;

/// The name of the credentials file in the state directory.
pub const CREDENTIALS_FILE: &str = "socks5.credentials";

/// The username written to a new credentials file.
pub const DEFAULT_USERNAME: &str = "pilot";

/// Characters of a generated password (URL-safe, so the line fits in a proxy URL as it is).
const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// Length of a generated password: 32 characters of 62, about 190 bits.
const PASSWORD_LEN: usize = 32;

/// A username and password the proxy accepts.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The username.
    pub username: String,
    /// The password.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Why the credentials file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// Reading or writing it failed (a symbolic link or another owner is refused here too).
    #[error("SOCKS5 credentials file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Group or others may read it.
    #[error("SOCKS5 credentials file {path} is readable by group or others (mode {mode:04o})")]
    Readable {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// It is not one `USERNAME:PASSWORD` line with both parts 1 to 255 bytes.
    #[error("SOCKS5 credentials file {0} is not one USERNAME:PASSWORD line (each 1 to 255 bytes, no ':' in the username)")]
    Malformed(PathBuf),
}

impl From<CredentialsError> for crate::error::PilotError {
    fn from(e: CredentialsError) -> Self {
        let hint = match &e {
            CredentialsError::Readable { path, .. } => format!(
                "run `chmod 600 {}`; others may have read it, so delete it to get new credentials",
                path.display()
            ),
            CredentialsError::Io { path, .. } | CredentialsError::Malformed(path) => format!(
                "delete {} to have new credentials generated at the next start",
                path.display()
            ),
        };
        crate::error::PilotError::new(crate::error::ErrorCode::Unauthorized, e.to_string(), hint)
    }
}

impl Credentials {
    /// New credentials: the default username and a random password.
    pub fn generate(rng: &mut dyn RngCore) -> Self {
        let password = (0..PASSWORD_LEN)
            .map(|_| {
                // Rejection sampling keeps every character equally likely.
                loop {
                    let b = (rng.next_u32() & 0xff) as usize;
                    if b < ALPHABET.len() * (256 / ALPHABET.len()) {
                        return char::from(ALPHABET[b % ALPHABET.len()]);
                    }
                }
            })
            .collect();
        Credentials {
            username: DEFAULT_USERNAME.into(),
            password,
        }
    }

    /// Parses the file's text: `USERNAME:PASSWORD`, an optional trailing newline.
    pub fn parse(text: &str) -> Option<Self> {
        let line = text.strip_suffix('\n').unwrap_or(text);
        let (user, pass) = line.split_once(':')?;
        let ok = |s: &str| (1..=255).contains(&s.len()) && !s.contains('\n');
        (ok(user) && ok(pass)).then(|| Credentials {
            username: user.into(),
            password: pass.into(),
        })
    }

    /// The file's text.
    pub fn to_line(&self) -> String {
        format!("{}:{}\n", self.username, self.password)
    }

    /// Whether a client's request carries these credentials (compared in constant time for
    /// equal lengths).
    pub fn accepts(&self, req: &AuthRequest) -> bool {
        let eq = |a: &[u8], b: &[u8]| {
            a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
        };
        // Both comparisons always run: the answer's timing does not say which part was wrong.
        let user = eq(self.username.as_bytes(), &req.username);
        let pass = eq(self.password.as_bytes(), &req.password);
        user & pass
    }

    /// Reads the credentials at `path`, or generates new ones with `rng` and writes them there
    /// (0600, atomically) if the file does not exist. A file that is a symbolic link, owned by
    /// another user, readable by group or others, or malformed is refused.
    pub fn load_or_create(path: &Path, rng: &mut dyn RngCore) -> Result<Self, CredentialsError> {
        let io = |source| CredentialsError::Io {
            path: path.into(),
            source,
        };
        match open_private(path, Access::Read) {
            Ok(mut f) => {
                let mode = f.metadata().map_err(io)?.mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(CredentialsError::Readable {
                        path: path.into(),
                        mode,
                    });
                }
                let mut text = String::new();
                // A valid file is at most 512 bytes; read a little more to see a longer one.
                f.by_ref()
                    .take(1024)
                    .read_to_string(&mut text)
                    .map_err(io)?;
                Self::parse(&text).ok_or_else(|| CredentialsError::Malformed(path.into()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let c = Self::generate(rng);
                write_private_atomic(path, c.to_line().as_bytes()).map_err(io)?;
                Ok(c)
            }
            Err(e) => Err(io(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    struct Counter(u32);
    impl RngCore for Counter {
        fn next_u32(&mut self) -> u32 {
            self.0 = self.0.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            self.0 >> 8
        }
        fn next_u64(&mut self) -> u64 {
            u64::from(self.next_u32())
        }
        fn fill_bytes(&mut self, d: &mut [u8]) {
            d.iter_mut().for_each(|b| *b = self.next_u32() as u8);
        }
        fn try_fill_bytes(&mut self, d: &mut [u8]) -> Result<(), rand_core::Error> {
            self.fill_bytes(d);
            Ok(())
        }
    }

    fn req(u: &str, p: &str) -> AuthRequest {
        AuthRequest {
            username: u.into(),
            password: p.into(),
        }
    }

    #[test]
    fn credentials_are_created_0600_on_the_first_start_and_reused_after() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CREDENTIALS_FILE);
        let c = Credentials::load_or_create(&path, &mut Counter(1)).unwrap();
        assert_eq!(c.username, DEFAULT_USERNAME);
        assert_eq!(c.password.len(), PASSWORD_LEN);
        assert!(c.password.bytes().all(|b| b.is_ascii_alphanumeric()));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = Credentials::load_or_create(&path, &mut Counter(2)).unwrap();
        assert_eq!(
            again, c,
            "the second start reads the file, it does not make new ones"
        );
        assert!(!format!("{c:?}").contains(&c.password));
    }

    #[test]
    fn a_readable_linked_or_malformed_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CREDENTIALS_FILE);
        std::fs::write(&path, "pilot:secret\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Credentials::load_or_create(&path, &mut Counter(1)).unwrap_err();
        assert!(
            matches!(e, CredentialsError::Readable { mode: 0o644, .. }),
            "{e}"
        );
        assert!(crate::error::PilotError::from(e).hint.contains("chmod 600"));

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, "no colon\n").unwrap();
        let e = Credentials::load_or_create(&path, &mut Counter(1)).unwrap_err();
        assert!(matches!(e, CredentialsError::Malformed(_)), "{e}");

        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let e = Credentials::load_or_create(&link, &mut Counter(1)).unwrap_err();
        assert!(matches!(e, CredentialsError::Io { .. }), "{e}");
    }

    #[test]
    fn only_the_exact_username_and_password_are_accepted() {
        let c = Credentials::parse("pilot:s3cret\n").unwrap();
        assert!(c.accepts(&req("pilot", "s3cret")));
        assert!(!c.accepts(&req("pilot", "s3cre")));
        assert!(!c.accepts(&req("pilot", "s3cret!")));
        assert!(!c.accepts(&req("pilo", "s3cret")));
        assert!(!c.accepts(&req("pilot", &"x".repeat(255))));
        assert!(Credentials::parse(":p").is_none());
        assert!(Credentials::parse("u:").is_none());
        assert!(Credentials::parse(&format!("u:{}", "p".repeat(256))).is_none());
        assert_eq!(
            Credentials::parse("u:a:b").unwrap().password,
            "a:b",
            "a password may hold ':'"
        );
    }
}
