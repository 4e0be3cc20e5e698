//! The vault key's wrap and paper form.

use super::*;

fn vault(byte: u8) -> VaultKey {
    VaultKey::from_bytes([byte; 32])
}

#[test]
fn a_wrapped_key_opens_with_its_passphrase_only() {
    let wrapped = wrap(&vault(7), b"correct horse battery staple", [1; 16], [2; 24]);
    assert_eq!(wrapped.len(), WRAP_LEN);
    let opened = unwrap(&wrapped, b"correct horse battery staple").unwrap();
    assert_eq!(opened.expose(), vault(7).expose());
    assert_eq!(
        unwrap(&wrapped, b"correct horse battery stapler").unwrap_err(),
        VaultError::WrongPassphrase
    );
    let mut altered = wrapped.clone();
    altered[60] ^= 1;
    assert_eq!(
        unwrap(&altered, b"correct horse battery staple").unwrap_err(),
        VaultError::WrongPassphrase
    );
}

#[test]
fn a_wrap_that_asks_for_too_much_is_refused_before_any_work() {
    let mut wrapped = wrap(&vault(7), b"correct horse battery staple", [1; 16], [2; 24]);
    wrapped[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        unwrap(&wrapped, b"x"),
        Err(VaultError::Malformed(_))
    ));
    assert!(matches!(
        unwrap(&wrapped[..10], b"x"),
        Err(VaultError::Malformed(_))
    ));
}

#[test]
fn a_paper_key_reads_back_and_a_typo_is_caught() {
    let text = paper(&vault(0xa5));
    assert!(text.starts_with("ferry vault key v1\n"), "{text}");
    assert_eq!(from_paper(&text).unwrap().expose(), vault(0xa5).expose());
    // Typed back by hand: lower case, no dashes, O for 0.
    let typed = text
        .lines()
        .skip(1)
        .collect::<String>()
        .replace('-', " ")
        .to_lowercase();
    assert_eq!(
        from_paper(&typed.replace('0', "o")).unwrap().expose(),
        vault(0xa5).expose()
    );
    let mut chars: Vec<char> = text.chars().collect();
    let at = chars.iter().position(|c| *c == '\n').unwrap() + 3;
    chars[at] = if chars[at] == 'Z' { 'Y' } else { 'Z' };
    let typo: String = chars.into_iter().collect();
    assert!(
        matches!(from_paper(&typo), Err(VaultError::Paper(_))),
        "{typo}"
    );
    assert!(matches!(from_paper("ABCD"), Err(VaultError::Paper(_))));
    assert!(matches!(from_paper("AB!D"), Err(VaultError::Paper(_))));
}

#[test]
fn weak_passphrases_are_refused_with_a_reason() {
    assert!(check_passphrase("short").unwrap_err().contains("too short"));
    assert!(check_passphrase("aaaaaaaaaaaaaaaa")
        .unwrap_err()
        .contains("repetitive"));
    assert!(check_passphrase("abcdefghijklmnop")
        .unwrap_err()
        .contains("sequence"));
    assert!(check_passphrase("river cobalt maple seventy").is_ok());
}

#[test]
fn fingerprints_tell_vaults_apart_and_show_nothing_of_them() {
    let (a, b) = (fingerprint(&vault(1)), fingerprint(&vault(2)));
    assert_ne!(a, b);
    assert_eq!(a, fingerprint(&vault(1)));
    assert_eq!(a.len(), 19, "{a}");
}
