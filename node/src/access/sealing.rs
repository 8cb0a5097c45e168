//! The hosts' secrets key and the sealing of secret values with it: XChaCha20-Poly1305 (a
//! random 192-bit nonce per value, so no counter has to be kept across hosts and restarts),
//! with the secret's name as associated data — a sealed value moved to another name does not
//! open.
//!
//! The key is 32 random bytes, written as 64 hex digits. It comes from `HERD_SECRETS_KEY`
//! (read once, when the daemon starts; herd never passes it on to an app) or from
//! `$HERD_HOME/secrets.key` (0600, owned by the daemon's user, never through a symlink),
//! which the first `herd secret put` creates. Every node of a cluster must be given the
//! same key: the sealed values are replicated, the key never travels.

use super::tokens::hex;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The key file inside `$HERD_HOME`.
pub const KEY_FILE: &str = "secrets.key";
/// The variable that may carry the key instead of the file.
pub const KEY_VAR: &str = "HERD_SECRETS_KEY";
const NONCE_LEN: usize = 24;

/// A loaded key. Never printed.
pub struct SealKey {
    cipher: XChaCha20Poly1305,
    /// Public fingerprint (16 hex digits): which key sealed a value.
    id: String,
}

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealKey({})", self.id)
    }
}

impl SealKey {
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        let mut h = Sha256::new();
        h.update(b"herd secrets key id\0");
        h.update(bytes);
        let id = hex(&h.finalize()[..8]);
        let cipher = XChaCha20Poly1305::new_from_slice(bytes).expect("a 32-byte key");
        Self { cipher, id }
    }

    /// Parses 64 hex digits (surrounding whitespace ignored).
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        if t.len() != 64 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("is not a herd secrets key (64 hex digits)".into());
        }
        let mut bytes = [0u8; 32];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = u8::from_str_radix(&t[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
        }
        Ok(Self::from_bytes(&bytes))
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// `base64(nonce || ciphertext+tag)`, bound to `name`.
    pub fn seal(&self, name: &str, value: &[u8]) -> String {
        let nonce_bytes: [u8; NONCE_LEN] = rand::random();
        let nonce = XNonce::from(nonce_bytes);
        let sealed = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: value,
                    aad: name.as_bytes(),
                },
            )
            .expect("XChaCha20-Poly1305 seals any length herd accepts");
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce_bytes);
        out.extend_from_slice(&sealed);
        B64.encode(out)
    }

    /// The value sealed under `name`, or why it does not open.
    pub fn open(&self, name: &str, sealed: &str) -> Result<Vec<u8>, String> {
        let raw = B64
            .decode(sealed)
            .map_err(|_| format!("secret `{name}` is damaged (not base64)"))?;
        if raw.len() < NONCE_LEN + 16 {
            return Err(format!("secret `{name}` is damaged (too short)"));
        }
        let (nonce, body) = raw.split_at(NONCE_LEN);
        let nonce = XNonce::try_from(nonce).map_err(|_| format!("secret `{name}` is damaged"))?;
        self.cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: body,
                    aad: name.as_bytes(),
                },
            )
            .map_err(|_| {
                format!("secret `{name}` does not open with this host's key: the key is not the one that sealed it, or the value is damaged")
            })
    }
}

/// Where this daemon's key comes from; loaded on first use and kept once loaded.
pub struct KeySource {
    path: PathBuf,
    /// `HERD_SECRETS_KEY` as the daemon started with it.
    from_env: Option<String>,
    loaded: Mutex<Option<Arc<SealKey>>>,
}

impl KeySource {
    pub fn new(home: &Path, from_env: Option<String>) -> Self {
        Self {
            path: home.join(KEY_FILE),
            from_env: from_env.filter(|v| !v.trim().is_empty()),
            loaded: Mutex::new(None),
        }
    }

    /// The key, created in `secrets.key` when `create` and there is none yet. A missing or
    /// unusable key is an error that says what to do; nothing is cached until a key loads
    /// (so a key file copied in later is picked up without a restart).
    pub fn key(&self, create: bool) -> Result<Arc<SealKey>, String> {
        let mut slot = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(k) = &*slot {
            return Ok(k.clone());
        }
        let key = match &self.from_env {
            Some(text) => SealKey::parse(text).map_err(|e| {
                format!(
                    "{KEY_VAR} {e}; set it to the contents of a secrets.key, or unset it to use {}",
                    self.path.display()
                )
            })?,
            None => match read_key_file(&self.path)? {
                Some(k) => k,
                None if create => create_key_file(&self.path)?,
                None => {
                    return Err(format!(
                        "no secrets key on this host: {} does not exist and {KEY_VAR} is not set; copy secrets.key from the node where the secrets were set (every node needs the same key)",
                        self.path.display()
                    ));
                }
            },
        };
        let key = Arc::new(key);
        *slot = Some(key.clone());
        Ok(key)
    }
}

fn read_key_file(path: &Path) -> Result<Option<SealKey>, String> {
    use crate::state::private::{self, Refusal};
    let shown = path.display();
    let text = match private::read(path, 1024) {
        Ok(Some(t)) => t,
        Ok(None) => return Ok(None),
        Err(Refusal::Symlink) => {
            return Err(format!(
                "{shown}: is a symlink; herd reads its secrets key only from a file of its own — put the key itself there"
            ));
        }
        Err(Refusal::NotRegular) => return Err(format!("{shown}: is not a regular file")),
        Err(Refusal::Owner(owner)) => {
            let uid = rustix::process::geteuid().as_raw();
            return Err(format!(
                "{shown}: is owned by uid {owner}, not by the daemon's uid {uid}; `chown {uid} {shown}` if it is the right key"
            ));
        }
        Err(Refusal::Mode(mode)) => {
            return Err(format!(
                "{shown}: mode {mode:o} lets other users read the secrets key; `chmod 600 {shown}`"
            ));
        }
        Err(Refusal::Io(e)) => return Err(e),
    };
    SealKey::parse(&text)
        .map(Some)
        .map_err(|e| format!("{shown}: {e}"))
}

fn create_key_file(path: &Path) -> Result<SealKey, String> {
    let bytes: [u8; 32] = rand::random();
    // O_EXCL + O_NOFOLLOW: a file or link planted meanwhile makes this fail, never followed.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    f.write_all(hex(&bytes).as_bytes())
        .and_then(|()| f.write_all(b"\n"))
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    if let Some(dir) = path.parent() {
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    tracing::info!(file = %path.display(), "secrets key created; back it up: without it no secret can be read");
    Ok(SealKey::from_bytes(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_sealed_value_opens_only_with_its_key_and_under_its_name() {
        let k = SealKey::from_bytes(&[7; 32]);
        let sealed = k.seal("db/pass", b"hunter2");
        assert!(!sealed.contains("hunter2"));
        assert_eq!(k.open("db/pass", &sealed).unwrap(), b"hunter2");
        assert_ne!(
            k.seal("db/pass", b"hunter2"),
            sealed,
            "a fresh nonce each time"
        );
        assert!(k.open("db/other", &sealed).is_err());
        let other = SealKey::from_bytes(&[8; 32]);
        assert_ne!(other.id(), k.id());
        let e = other.open("db/pass", &sealed).unwrap_err();
        assert!(e.contains("does not open"), "{e}");
        let mut damaged = B64.decode(&sealed).unwrap();
        *damaged.last_mut().unwrap() ^= 1;
        assert!(k.open("db/pass", &B64.encode(damaged)).is_err());
        assert!(k.open("db/pass", "!!").is_err());
    }

    #[test]
    fn the_key_file_is_created_once_0600_and_read_back() {
        let home = tempfile::tempdir().unwrap();
        let src = KeySource::new(home.path(), None);
        let e = src.key(false).unwrap_err();
        assert!(e.contains("no secrets key"), "{e}");
        let a = src.key(true).unwrap();
        let meta = std::fs::metadata(home.path().join(KEY_FILE)).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        let b = KeySource::new(home.path(), None).key(false).unwrap();
        assert_eq!(a.id(), b.id());
        let sealed = a.seal("x", b"v");
        assert_eq!(b.open("x", &sealed).unwrap(), b"v");
    }

    #[test]
    fn a_key_file_others_can_read_or_a_symlink_or_a_bad_env_key_is_refused() {
        let home = tempfile::tempdir().unwrap();
        let path = home.path().join(KEY_FILE);
        std::fs::write(&path, hex(&[1; 32])).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = KeySource::new(home.path(), None).key(true).unwrap_err();
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", &path).unwrap();
        let e = KeySource::new(home.path(), None).key(true).unwrap_err();
        assert!(e.contains("symlink"), "{e}");
        let e = KeySource::new(home.path(), Some("short".into()))
            .key(true)
            .unwrap_err();
        assert!(e.contains(KEY_VAR), "{e}");
        let k = KeySource::new(home.path(), Some(hex(&[1; 32])))
            .key(false)
            .unwrap();
        assert_eq!(k.id(), SealKey::from_bytes(&[1; 32]).id());
    }
}
