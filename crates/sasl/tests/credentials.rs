//! Stored credentials: derivation rules, PLAIN verification, and the binary form.

// Test helpers outside #[test] functions: a panic there is a failed assertion too,
// as clippy.toml allows inside the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use aviary_sasl::{MIN_ITERATIONS, SALT_LEN, SaslError, StoredCredentials};
use common::{PASSWORD, creds};

#[test]
fn derive_draws_fresh_salts_and_sizes_keys_per_hash() {
    let a = creds();
    assert_eq!(a.sha1.salt.len(), SALT_LEN);
    assert_eq!(a.sha256.salt.len(), SALT_LEN);
    assert_ne!(a.sha1.salt, a.sha256.salt);
    assert_eq!((a.sha1.stored_key.len(), a.sha1.server_key.len()), (20, 20));
    assert_eq!(
        (a.sha256.stored_key.len(), a.sha256.server_key.len()),
        (32, 32)
    );
    assert_eq!(a.sha1.iterations, MIN_ITERATIONS);

    let b = StoredCredentials::derive(PASSWORD, MIN_ITERATIONS).unwrap();
    assert_ne!(a.sha256.salt, b.sha256.salt);
    assert_ne!(a.sha256.stored_key, b.sha256.stored_key);
}

#[test]
fn derive_enforces_the_iteration_floor_and_password_rules() {
    assert_eq!(
        StoredCredentials::derive(PASSWORD, MIN_ITERATIONS - 1),
        Err(SaslError::TooFewIterations {
            got: 4095,
            min: 4096
        })
    );
    assert_eq!(
        StoredCredentials::derive("", MIN_ITERATIONS),
        Err(SaslError::EmptyPassword)
    );
    // Only characters SASLprep maps to nothing.
    assert_eq!(
        StoredCredentials::derive("\u{AD}\u{AD}", MIN_ITERATIONS),
        Err(SaslError::EmptyPassword)
    );
    // Control characters are prohibited (RFC 4013 §2.3).
    assert_eq!(
        StoredCredentials::derive("pen\u{7}cil", MIN_ITERATIONS),
        Err(SaslError::Saslprep)
    );
    assert_eq!(
        StoredCredentials::derive_with_salts(PASSWORD, MIN_ITERATIONS, b"", b"salt"),
        Err(SaslError::InvalidSalt)
    );
}

#[test]
fn derivation_is_deterministic_for_a_salt_and_saslprep_equivalent_passwords() {
    let a = StoredCredentials::derive_with_salts("I\u{AD}X", 4096, b"salt1", b"salt2").unwrap();
    let b = StoredCredentials::derive_with_salts("IX", 4096, b"salt1", b"salt2").unwrap();
    assert_eq!(a, b);
    let c = StoredCredentials::derive_with_salts("IY", 4096, b"salt1", b"salt2").unwrap();
    assert_ne!(a.sha1.stored_key, c.sha1.stored_key);
}

#[test]
fn verify_plain() {
    let creds = creds();
    assert!(creds.verify_plain(PASSWORD));
    assert!(creds.verify_plain("pen\u{AD}cil"));
    assert!(!creds.verify_plain("pencil2"));
    assert!(!creds.verify_plain("Pencil"));
    assert!(!creds.verify_plain(""));
    assert!(!creds.verify_plain("pen\u{7}cil"));

    let mut broken = creds.clone();
    broken.sha256.stored_key.truncate(31);
    assert!(!broken.verify_plain(PASSWORD));
}

#[test]
fn debug_output_hides_the_keys() {
    let shown = format!("{:?}", creds());
    assert!(shown.contains("<redacted>"));
    assert!(shown.contains("iterations: 4096"));
    let key_bytes = format!("{:?}", creds().sha256.stored_key);
    assert!(!shown.contains(&key_bytes));
}

#[test]
fn binary_form_round_trips() {
    let bytes = creds().to_bytes();
    assert_eq!(bytes[0], 1, "format version");
    assert_eq!(bytes.len(), 1 + 2 * (4 + 1 + SALT_LEN) + 2 * 20 + 2 * 32);
    assert_eq!(&StoredCredentials::from_bytes(&bytes).unwrap(), creds());

    let rfc = StoredCredentials::derive_with_salts("pencil", 4096, &[7; 3], &[9; 255]).unwrap();
    assert_eq!(StoredCredentials::from_bytes(&rfc.to_bytes()).unwrap(), rfc);
}

#[test]
fn binary_form_rejects_truncation_at_every_length() {
    let bytes = creds().to_bytes();
    for len in 0..bytes.len() {
        assert_eq!(
            StoredCredentials::from_bytes(&bytes[..len]),
            Err(SaslError::Truncated),
            "length {len}"
        );
    }
}

#[test]
fn binary_form_rejects_bad_versions_trailing_data_and_impossible_values() {
    let bytes = creds().to_bytes();

    let mut longer = bytes.clone();
    longer.push(0);
    assert_eq!(
        StoredCredentials::from_bytes(&longer),
        Err(SaslError::TrailingData(1))
    );

    for version in [0u8, 2, 255] {
        let mut other = bytes.clone();
        other[0] = version;
        assert_eq!(
            StoredCredentials::from_bytes(&other),
            Err(SaslError::UnsupportedVersion(version))
        );
    }

    let mut zero_iterations = bytes.clone();
    zero_iterations[1..5].copy_from_slice(&[0; 4]);
    assert!(matches!(
        StoredCredentials::from_bytes(&zero_iterations),
        Err(SaslError::InvalidCredentials(_))
    ));

    let mut empty_salt = bytes.clone();
    empty_salt[5] = 0;
    assert!(matches!(
        StoredCredentials::from_bytes(&empty_salt),
        Err(SaslError::InvalidCredentials(_))
    ));

    // A longer salt shifts the keys: the SHA-256 block then runs out of bytes.
    let mut longer_salt = bytes;
    longer_salt[5] += 1;
    assert!(StoredCredentials::from_bytes(&longer_salt).is_err());
}
