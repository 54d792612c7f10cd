//! `txbank keys`: each bank's Ed25519 key pair and the public keys the banks trust.
//!
//! A keys folder holds `BANK.key` files (private, readable by their owner only) and one
//! `trusted` file of public keys. `up` makes a key pair per bank on first start; an
//! operator makes one with `keys new`, sends its public line (`keys public`) to the
//! other banks, and rotates with `keys rotate`, which keeps the old public key trusted
//! for an overlap.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use txbank_domain::BankId;
use txbank_messaging::signing::{unix_now, TrustedKey};
use txbank_messaging::{BankKey, TrustedKeys};

/// The trusted-keys file of the keys folder `dir`.
pub fn trusted_keys_file(dir: &Path) -> PathBuf {
    dir.join("trusted")
}

/// The private key file of `bank` in the keys folder `dir`.
pub fn private_key_file(dir: &Path, bank: &str) -> PathBuf {
    dir.join(format!("{bank}.key"))
}

/// Makes a key pair for each of `banks` in `dir` that has none, and trusts its public
/// key; keys already there are kept.
pub fn ensure_bank_keys(dir: &Path, banks: &[&str]) -> Result<()> {
    for bank in banks {
        if !private_key_file(dir, bank).exists() {
            new_key(dir, &BankId::parse(bank)?)?;
        }
    }
    Ok(())
}

/// Makes `bank`'s key pair in `dir`: its private key file (refused when one exists) and
/// its public key in the trusted-keys file. Returns the public key.
pub fn new_key(dir: &Path, bank: &BankId) -> Result<TrustedKey> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let key = BankKey::generate(bank.clone(), &key_id(bank)?)?;
    write_private(&private_key_file(dir, bank.as_str()), &key, false)?;
    update_trusted(dir, |trusted| trusted.insert(key.public()))?;
    Ok(key.public())
}

/// Replaces `bank`'s key in `dir` with a new one, trusted at once; the keys it had stay
/// trusted for `overlap_secs` more, so that messages signed before the rotation (and by
/// instances not yet restarted) still verify. Returns the new public key.
pub fn rotate_key(dir: &Path, bank: &BankId, overlap_secs: u64) -> Result<TrustedKey> {
    let file = private_key_file(dir, bank.as_str());
    let old = BankKey::read(&file)?;
    if old.bank() != bank {
        bail!("{} holds {}'s key, not {bank}'s", file.display(), old.bank());
    }
    let new = BankKey::generate(bank.clone(), &key_id(bank)?)?;
    update_trusted(dir, |trusted| {
        trusted.insert(old.public());
        trusted.insert(new.public());
        trusted.retire(bank, new.id(), unix_now().saturating_add(overlap_secs));
    })?;
    write_private(&file, &new, true)?;
    Ok(new.public())
}

/// A new key id: the bank, the time, and random hex, so that two never collide.
fn key_id(bank: &BankId) -> Result<String> {
    let mut random = [0u8; 3];
    getrandom::getrandom(&mut random).context("no randomness from the operating system")?;
    Ok(format!("{bank}-{}-{}", unix_now(), hex::encode(random)))
}

/// Writes `key` to `file`, readable by its owner only: a new file, or (`replace`) in
/// place of the old one, renamed over it so that no reader sees half a key.
fn write_private(file: &Path, key: &BankKey, replace: bool) -> Result<()> {
    let written = if replace {
        file.with_extension("key.new")
    } else {
        file.to_path_buf()
    };
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(!replace)
        .create(replace)
        .truncate(replace)
        .mode(0o600)
        .open(&written)
        .with_context(|| format!("cannot create {}", written.display()))?;
    out.write_all(key.to_file_text().as_bytes())
        .and_then(|()| out.sync_all())
        .with_context(|| format!("cannot write {}", written.display()))?;
    if replace {
        std::fs::rename(&written, file).with_context(|| format!("cannot replace {}", file.display()))?;
    }
    Ok(())
}

/// Reads the trusted-keys file of `dir` (none yet: empty), changes it, and writes it
/// back whole, renamed over the old one so that a bank reading it never sees half.
fn update_trusted(dir: &Path, change: impl FnOnce(&mut TrustedKeys)) -> Result<()> {
    let file = trusted_keys_file(dir);
    let mut trusted = if file.exists() {
        TrustedKeys::read(&file)?
    } else {
        TrustedKeys::default()
    };
    change(&mut trusted);
    let written = file.with_extension("new");
    let text = format!(
        "# Public keys of the banks this one takes messages from: BANK KEY_ID PUBLIC_HEX [until=UNIX_SECONDS]\n{}",
        trusted.to_text()
    );
    std::fs::write(&written, text).with_context(|| format!("cannot write {}", written.display()))?;
    std::fs::rename(&written, &file).with_context(|| format!("cannot replace {}", file.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bank(name: &str) -> BankId {
        BankId::parse(name).unwrap()
    }

    #[test]
    fn a_new_key_is_private_to_its_owner_and_trusted_and_never_overwritten() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let public = new_key(dir.path(), &bank("bank1")).unwrap();
        let file = private_key_file(dir.path(), "bank1");
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(BankKey::read(&file).unwrap().public(), public);
        let trusted = TrustedKeys::read(&trusted_keys_file(dir.path())).unwrap();
        assert_eq!(trusted.keys(), std::slice::from_ref(&public));
        assert!(new_key(dir.path(), &bank("bank1")).is_err(), "an existing key is kept");
        ensure_bank_keys(dir.path(), &["bank1", "bank2"]).unwrap();
        assert_eq!(BankKey::read(&file).unwrap().public(), public);
        assert_eq!(
            TrustedKeys::read(&trusted_keys_file(dir.path())).unwrap().keys().len(),
            2
        );
    }

    #[test]
    fn a_rotation_trusts_the_new_key_and_the_old_one_for_the_overlap() {
        let dir = tempfile::tempdir().unwrap();
        let old = new_key(dir.path(), &bank("bank1")).unwrap();
        let other = new_key(dir.path(), &bank("bank2")).unwrap();
        let new = rotate_key(dir.path(), &bank("bank1"), 3600).unwrap();
        assert_ne!(new.id, old.id);
        let signing = BankKey::read(&private_key_file(dir.path(), "bank1")).unwrap();
        assert_eq!(signing.public(), new);
        let trusted = TrustedKeys::read(&trusted_keys_file(dir.path())).unwrap();
        let until = |id: &str| trusted.keys().iter().find(|key| key.id == id).unwrap().until;
        let overlap_end = until(&old.id).expect("the old key is retired");
        assert!(overlap_end >= unix_now() + 3590 && overlap_end <= unix_now() + 3600);
        assert_eq!((until(&new.id), until(&other.id)), (None, None));
    }
}
