//! KMS key slots: the master key encrypted by a key-management service (AWS
//! KMS `Encrypt`), under an encryption context that binds the repository id,
//! the slot id and the slot's record (`DESIGN.md` §4).
//!
//! The engine does not talk to KMS itself: it asks a [`KeyWrapper`], which the
//! program supplies (the CLI implements it with `aws-sdk-kms`). So the engine
//! stays free of any one service's SDK, and its tests can check what it asks
//! for without a server.

use super::MasterKey;
use super::epoch::SlotIdentity;
use super::keyslot::{HOST_MAX, IDENTITY_MAX, SlotSecret, identity_of};
use crate::error::{Error, Result};
use crate::format::id::{RepoId, SlotId};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// What a key-management service failed to do, as one line: `KMS Decrypt with
/// key alias/coffer denied: AccessDeniedException: ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsError {
    /// `Encrypt` or `Decrypt`.
    pub action: &'static str,
    /// The key as the slot (or the command line) names it.
    pub key_id: String,
    /// The service's error code and message, or why it could not be reached.
    pub reason: String,
    /// The service answered and refused (access denied, key disabled, ...).
    pub denied: bool,
}

impl std::fmt::Display for KmsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verdict = if self.denied { "denied" } else { "failed" };
        let (action, key) = (self.action, &self.key_id);
        write!(f, "KMS {action} with key {key} {verdict}: {}", self.reason)
    }
}

impl std::error::Error for KmsError {}

/// The encryption context of a KMS slot, as (name, value) pairs in this order.
pub type Context = Vec<(&'static str, String)>;

/// Encrypts and decrypts small secrets with a key a service holds.
#[async_trait::async_trait]
pub trait KeyWrapper: Send + Sync + std::fmt::Debug {
    /// Encrypts `plaintext` under `key_id`, bound to `context`; returns the
    /// service's ciphertext.
    async fn wrap(
        &self,
        key_id: &str,
        plaintext: &[u8],
        context: &Context,
    ) -> std::result::Result<Vec<u8>, KmsError>;

    /// Decrypts what [`KeyWrapper::wrap`] returned for the same `key_id` and
    /// `context`.
    async fn unwrap(
        &self,
        key_id: &str,
        ciphertext: &[u8],
        context: &Context,
    ) -> std::result::Result<Zeroizing<Vec<u8>>, KmsError>;
}

/// The JSON form of a KMS key slot.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KmsSlot {
    /// Slot format version (2).
    pub version: u32,
    /// `"kms"`.
    pub kind: String,
    /// The KMS key as given when the slot was made: key id, ARN or alias.
    pub key_id: String,
    /// The service's ciphertext of the master key, hex.
    pub wrapped: String,
    /// When the slot was made, Unix ms by its writer's clock.
    pub created: u64,
    /// The host name of the machine that made it ("" if it had none).
    pub host: String,
    /// Version 3: the recipient (`age1...`) of the age identity `wrapped` holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<String>,
    /// Version 3: [`super::epoch::slot_mac`] of the recipient, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

/// The version KMS slots are written in; version 2 (which wraps the root key
/// itself) is still read.
const KMS_SLOT_VERSION: u32 = 3;

/// The longest key id a slot may name (KMS ARNs of aliases are well below).
const KEY_ID_MAX: usize = 2048;

/// The largest ciphertext accepted from a slot (AWS KMS's are about 200 bytes).
const WRAPPED_MAX: usize = 6144;

/// The encryption context binding a wrapped key to its repository, slot and
/// record.
pub fn context(repo: &RepoId, slot: &SlotId, created: u64, host: &str) -> Context {
    vec![
        ("coffer-repository", repo.to_hex()),
        ("coffer-slot", slot.to_hex()),
        ("coffer-origin", format!("{created} {host}")),
    ]
}

impl KmsSlot {
    /// A version-3 slot: `identity` wrapped with `wrapper` under `key_id`, its
    /// recipient bound to the repository by a MAC under `root`.
    pub async fn create(
        wrapper: &dyn KeyWrapper,
        key_id: &str,
        (identity, root): (&SlotIdentity, &MasterKey),
        (repo, slot): (&RepoId, &SlotId),
    ) -> Result<KmsSlot> {
        let secret = identity.secret();
        let mut ks = Self::wrap(wrapper, key_id, secret.as_bytes(), (repo, slot)).await?;
        let recipient = identity.recipient();
        ks.mac = Some(super::epoch::slot_mac(root, repo, slot, "kms", &recipient));
        ks.recipient = Some(recipient);
        ks.version = KMS_SLOT_VERSION;
        Ok(ks)
    }

    /// A version-2 slot (the root key itself wrapped), as coffer wrote them
    /// before key epochs: for fixtures and tests of old repositories.
    #[cfg(any(test, feature = "testing"))]
    pub async fn create_v2(
        wrapper: &dyn KeyWrapper,
        key_id: &str,
        master: &MasterKey,
        (repo, slot): (&RepoId, &SlotId),
    ) -> Result<KmsSlot> {
        Self::wrap(wrapper, key_id, master.as_bytes(), (repo, slot)).await
    }

    async fn wrap(
        wrapper: &dyn KeyWrapper,
        key_id: &str,
        secret: &[u8],
        (repo, slot): (&RepoId, &SlotId),
    ) -> Result<KmsSlot> {
        if key_id.is_empty() || key_id.len() > KEY_ID_MAX {
            return Err(Error::Config(format!(
                "a KMS key id is 1 to {KEY_ID_MAX} bytes"
            )));
        }
        let created = crate::format::version::now_millis();
        let host = super::keyslot::this_host();
        let ctx = context(repo, slot, created, &host);
        let wrapped = wrapper.wrap(key_id, secret, &ctx).await?;
        Ok(KmsSlot {
            version: 2,
            kind: "kms".into(),
            key_id: key_id.to_string(),
            wrapped: hex::encode(wrapped),
            created,
            host,
            recipient: None,
            mac: None,
        })
    }

    /// Refuses a slot this build cannot use (other version, oversized fields).
    pub fn check(&self, object: &str) -> Result<()> {
        let record = match self.version {
            2 => self.recipient.is_none() && self.mac.is_none(),
            _ => self.recipient.is_some() && self.mac.is_some(),
        };
        if !matches!(self.version, 2..=KMS_SLOT_VERSION) || self.kind != "kms" {
            return Err(Error::UnsupportedVersion {
                what: format!("key slot {object} ({})", self.kind),
                found: self.version,
                supported: KMS_SLOT_VERSION,
            });
        }
        let sizes = !self.key_id.is_empty()
            && self.key_id.len() <= KEY_ID_MAX
            && self.host.len() <= HOST_MAX
            && self.wrapped.len() <= 2 * WRAPPED_MAX;
        if !sizes {
            return Err(Error::corrupt(
                object,
                "a field of the KMS slot is too long",
            ));
        }
        if !record {
            return Err(Error::corrupt(
                object,
                "its recipient and mac fields do not match its version",
            ));
        }
        Ok(())
    }

    /// Asks `wrapper` for the root key (version 2) or the slot's identity
    /// (version 3): one request.
    pub async fn open(
        &self,
        wrapper: &dyn KeyWrapper,
        repo: &RepoId,
        slot: &SlotId,
    ) -> Result<SlotSecret> {
        let object = format!("keys/{slot}");
        self.check(&object)?;
        let wrapped = hex::decode(&self.wrapped).map_err(|_| Error::corrupt(&object, "bad hex"))?;
        let ctx = context(repo, slot, self.created, &self.host);
        let plain = wrapper.unwrap(&self.key_id, &wrapped, &ctx).await?;
        if let Some(recipient) = &self.recipient {
            if plain.len() > IDENTITY_MAX {
                return Err(Error::corrupt(&object, "KMS returned too long an identity"));
            }
            return identity_of(&plain, recipient, &object).map(SlotSecret::Identity);
        }
        let key: [u8; 32] = plain
            .as_slice()
            .try_into()
            .map_err(|_| Error::corrupt(&object, "KMS returned a key that is not 32 bytes long"))?;
        Ok(SlotSecret::Root(MasterKey::from_bytes(key)))
    }
}

/// A stand-in for a KMS in the engine's own tests: "encrypts" with a fixed
/// XOR followed by the context (so a changed context fails like KMS's), counts
/// requests, and can be told to refuse everything.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use std::sync::Mutex;

    #[derive(Debug, Default)]
    pub(crate) struct FakeKms {
        pub requests: Mutex<Vec<(String, Context)>>,
        pub refuse: Mutex<Option<String>>,
    }

    fn bound(context: &Context) -> Vec<u8> {
        context
            .iter()
            .flat_map(|(k, v)| [k.as_bytes(), v.as_bytes()].concat())
            .collect()
    }

    impl FakeKms {
        fn request(
            &self,
            action: &'static str,
            key_id: &str,
            context: &Context,
        ) -> std::result::Result<(), KmsError> {
            let mut l = self.requests.lock().expect("lock");
            l.push((key_id.into(), context.clone()));
            match self.refuse.lock().expect("lock").clone() {
                Some(reason) => Err(KmsError {
                    action,
                    key_id: key_id.into(),
                    reason,
                    denied: true,
                }),
                None => Ok(()),
            }
        }
    }

    #[async_trait::async_trait]
    impl KeyWrapper for FakeKms {
        async fn wrap(
            &self,
            key_id: &str,
            plaintext: &[u8],
            context: &Context,
        ) -> std::result::Result<Vec<u8>, KmsError> {
            self.request("Encrypt", key_id, context)?;
            let mut out = vec![u8::try_from(plaintext.len()).expect("small secrets")];
            out.extend(plaintext.iter().map(|b| b ^ 0x5a));
            out.extend(bound(context));
            Ok(out)
        }

        async fn unwrap(
            &self,
            key_id: &str,
            ciphertext: &[u8],
            context: &Context,
        ) -> std::result::Result<Zeroizing<Vec<u8>>, KmsError> {
            self.request("Decrypt", key_id, context)?;
            let n = 1 + usize::from(ciphertext.first().copied().unwrap_or(0));
            if ciphertext.len() < n || ciphertext[n..] != bound(context)[..] {
                return Err(KmsError {
                    action: "Decrypt",
                    key_id: key_id.into(),
                    reason: "InvalidCiphertextException: ".into(),
                    denied: true,
                });
            }
            Ok(Zeroizing::new(
                ciphertext[1..n].iter().map(|b| b ^ 0x5a).collect(),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::FakeKms;
    use super::*;

    #[tokio::test]
    async fn the_context_binds_repository_slot_and_record() {
        let rec = FakeKms::default();
        let master = MasterKey::generate();
        let (repo, slot) = (RepoId::random(), SlotId::random());
        let ks = KmsSlot::create_v2(&rec, "alias/k", &master, (&repo, &slot))
            .await
            .unwrap();
        assert_eq!((ks.version, ks.kind.as_str()), (2, "kms"));
        let seen = rec.requests.lock().unwrap()[0].clone();
        assert_eq!(seen.0, "alias/k");
        assert_eq!(seen.1, context(&repo, &slot, ks.created, &ks.host));
        assert_eq!(seen.1[0], ("coffer-repository", repo.to_hex()));
        assert!(ks.open(&rec, &repo, &slot).await.unwrap() == SlotSecret::Root(master.clone()));

        let err = ks.open(&rec, &repo, &SlotId::random()).await.unwrap_err();
        assert!(err.to_string().contains("InvalidCiphertext"), "{err}");
        let err = ks.open(&rec, &RepoId::random(), &slot).await.unwrap_err();
        assert!(
            err.to_string()
                .contains("KMS Decrypt with key alias/k denied"),
            "{err}"
        );
        let mut edited = ks.clone();
        edited.host.push('x');
        assert!(edited.open(&rec, &repo, &slot).await.is_err());
        let mut newer = ks.clone();
        newer.version = 4;
        let err = newer.open(&rec, &repo, &slot).await.unwrap_err();
        assert!(
            matches!(err, Error::UnsupportedVersion { found: 4, .. }),
            "{err}"
        );
        // Version 3 without its recipient, or version 2 with one, is damage.
        let mut half = ks;
        half.version = 3;
        assert!(matches!(half.open(&rec, &repo, &slot).await, Err(Error::Corrupt { .. })));
    }
}
