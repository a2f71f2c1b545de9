//! Bad limit files: each gets a clear error that names the field, the line and the column, and
//! nothing panics.

use rcmgr::{ConfigError, ConfigErrorKind, Error, PartialLimitConfig};

/// Parses `json`, which must fail, and returns the configuration error.
fn refused(json: &str) -> ConfigError {
    match PartialLimitConfig::from_json_str(json) {
        Ok(partial) => panic!("accepted {json:?} as {partial:?}"),
        Err(Error::Config(error)) => *error,
        Err(other) => panic!("not a configuration error: {other:?}"),
    }
}

/// The kind, path, line and column of the error for `json`, and its message.
fn located(json: &str) -> (ConfigErrorKind, String, usize, usize, String) {
    let error = refused(json);
    (
        error.kind(),
        error.path().to_owned(),
        error.line(),
        error.column(),
        error.message().to_owned(),
    )
}

#[test]
fn wrong_types_name_the_field() {
    let cases = [
        (r#"{"System": 5}"#, "System"),
        (r#"{"System": "unlimited"}"#, "System"),
        (r#"{"System": {"Conns": true}}"#, "System.Conns"),
        (r#"{"System": {"Conns": 1.5}}"#, "System.Conns"),
        (r#"{"System": {"Conns": [1]}}"#, "System.Conns"),
        (r#"{"System": {"Conns": {}}}"#, "System.Conns"),
        (r#"{"System": {"Memory": 1e3}}"#, "System.Memory"),
        (r#"{"Service": []}"#, "Service"),
        (r#"{"Service": {"s": 1}}"#, "Service.s"),
        (
            r#"{"Protocol": {"/ipfs/id/1.0.0": {"FD": []}}}"#,
            r#"Protocol["/ipfs/id/1.0.0"].FD"#,
        ),
        (
            r#"{"peer": {"12D3KooWSJcRGtn1PxcVurHrjtT7EoUnn4w2y8e7MK2cnjSGEwwM": {"fd": false}}}"#,
            "peer.12D3KooWSJcRGtn1PxcVurHrjtT7EoUnn4w2y8e7MK2cnjSGEwwM.fd",
        ),
        ("[]", ""),
        ("42", ""),
        (r#""limits""#, ""),
    ];
    for (json, path) in cases {
        let error = refused(json);
        assert_eq!(
            error.kind(),
            ConfigErrorKind::InvalidValue,
            "{json}: {error}"
        );
        assert_eq!(error.path(), path, "{json}: {error}");
        assert!(error.message().contains("invalid type"), "{json}: {error}");
    }
}

#[test]
fn errors_carry_the_line_and_column_of_the_offending_value() {
    let json = "{\n  \"System\": {\n    \"Conns\": 16,\n    \"FD\": \"lots\"\n  }\n}";
    let (kind, path, line, column, message) = located(json);
    assert_eq!(
        (kind, path.as_str(), line),
        (ConfigErrorKind::InvalidValue, "System.FD", 4)
    );
    // Just after the offending string `"lots"`, which spans columns 11 to 16.
    assert_eq!(column, 16);
    assert!(message.contains(r#"unknown limit "lots""#), "{message}");
    let shown = refused(json).to_string();
    assert!(
        shown.starts_with("limits configuration at System.FD (line 4, column 16): unknown limit"),
        "{shown}"
    );
}

#[test]
fn quoted_numbers_are_only_for_memory() {
    let (_, path, _, _, message) = located(r#"{"System": {"Conns": "5"}}"#);
    assert_eq!(path, "System.Conns");
    assert!(
        message.contains("only Memory may be written as a string"),
        "{message}"
    );
    assert!(PartialLimitConfig::from_json_str(r#"{"System": {"Memory": "5"}}"#).is_ok());
}

#[test]
fn markers_are_case_sensitive_as_in_go() {
    for marker in ["Unlimited", "BLOCKALL", "blockall", "Default", " unlimited"] {
        let json = format!(r#"{{"System": {{"Conns": "{marker}"}}}}"#);
        let (kind, path, ..) = located(&json);
        assert_eq!(
            (kind, path.as_str()),
            (ConfigErrorKind::InvalidValue, "System.Conns")
        );
    }
}

#[test]
fn negative_counts_other_than_the_markers_are_refused() {
    for json in [
        r#"{"System": {"Conns": -3}}"#,
        r#"{"System": {"Conns": -9223372036854775808}}"#,
        r#"{"System": {"Memory": -4096}}"#,
        r#"{"System": {"Memory": "-3"}}"#,
    ] {
        let (kind, path, _, _, message) = located(json);
        assert_eq!(kind, ConfigErrorKind::InvalidValue, "{json}");
        assert!(path.starts_with("System."), "{json}: {path}");
        assert!(message.contains("negative limit"), "{json}: {message}");
    }
}

#[test]
fn numbers_beyond_i64_are_refused() {
    for json in [
        r#"{"System": {"Conns": 9223372036854775808}}"#,
        r#"{"System": {"Conns": 18446744073709551615}}"#,
        r#"{"System": {"Conns": 18446744073709551616}}"#,
        r#"{"System": {"Conns": 123456789012345678901234567890}}"#,
        r#"{"System": {"Memory": "9223372036854775808"}}"#,
        r#"{"System": {"Memory": "99999999999999999999999999999999999999999"}}"#,
    ] {
        let (kind, path, _, _, message) = located(json);
        assert_eq!(kind, ConfigErrorKind::InvalidValue, "{json}: {message}");
        assert!(path.starts_with("System."), "{json}: {path}");
        assert!(message.contains("out of range"), "{json}: {message}");
    }
    // The largest value go can hold is accepted.
    let max = r#"{"System": {"Conns": 9223372036854775807, "Memory": "9223372036854775807"}}"#;
    assert!(PartialLimitConfig::from_json_str(max).is_ok());
    // Beyond what a float can hold serde_json refuses the number itself.
    let error = refused(r#"{"System": {"Conns": 1e400}}"#);
    assert_eq!(error.path(), "System.Conns", "{error}");
}

#[test]
fn null_limit_values_are_refused() {
    let (kind, path, ..) = located(r#"{"System": {"Memory": null}}"#);
    assert_eq!(
        (kind, path.as_str()),
        (ConfigErrorKind::InvalidValue, "System.Memory")
    );
    let (_, path, ..) = located(r#"{"Transient": {"Streams": null}}"#);
    assert_eq!(path, "Transient.Streams");
}

#[test]
fn bad_peer_ids_are_named() {
    for key in [
        "not-a-peer",
        "",
        "QmVvtzcZgCkMnSFf2dnrBPXrWuNFWNM9J3MpZQCvWPuVZ",
        "bafzbeie5745rpv2m6tjyuugywy4d5ewrqgqqhfnf445he3omzpjbx5xqxe",
        "0OIl",
    ] {
        let json = format!(r#"{{"Peer": {{"{key}": {{"Memory": 1}}}}}}"#);
        let (kind, path, line, _, message) = located(&json);
        assert_eq!(
            (kind, path.as_str(), line),
            (ConfigErrorKind::InvalidValue, "Peer", 1)
        );
        assert!(
            message.contains(&format!("invalid peer ID {key:?}")),
            "{message}"
        );
    }
}

#[test]
fn trailing_garbage_is_refused() {
    for (json, column) in [
        ("{} x", 4),
        ("{}{}", 3),
        ("{\"System\": {}}\n]", 1),
        ("null 0", 6),
    ] {
        let (kind, path, _, found_column, message) = located(json);
        assert_eq!(
            kind,
            ConfigErrorKind::TrailingCharacters,
            "{json}: {message}"
        );
        assert_eq!((path.as_str(), found_column), ("", column), "{json}");
    }
    // Whitespace after the document is fine.
    assert!(PartialLimitConfig::from_json_str("{}\n\t \r\n").is_ok());
}

#[test]
fn deep_nesting_is_refused_without_exhausting_the_stack() {
    for depth in [200, 10_000, 1_000_000] {
        let arrays = format!(
            r#"{{"Unknown": {}{}}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        );
        let objects = format!(
            r#"{{"Unknown": {}1{}}}"#,
            r#"{"a":"#.repeat(depth),
            "}".repeat(depth)
        );
        for json in [arrays, objects] {
            let error = refused(&json);
            assert_eq!(error.kind(), ConfigErrorKind::Syntax, "{error}");
            assert!(error.message().contains("recursion limit"), "{error}");
            assert!(error.path().starts_with("Unknown"), "{error}");
            assert!(error.path().len() < 200, "the path is elided: {error}");
        }
    }
    // Known fields refuse nesting at once.
    let error = refused(&format!(r#"{{"System": {}}}"#, "[".repeat(100_000)));
    assert_eq!(error.path(), "System");
    // Nesting within the limit in an unknown field is skipped, as go skips it.
    let shallow = format!(r#"{{"Unknown": {}{}}}"#, "[".repeat(100), "]".repeat(100));
    assert!(PartialLimitConfig::from_json_str(&shallow).is_ok());
}

#[test]
fn broken_json_is_a_syntax_or_eof_error() {
    let cases = [
        (r#"{"System": {"Conns": 1,}}"#, ConfigErrorKind::Syntax),
        (r#"{"System" {}}"#, ConfigErrorKind::Syntax),
        (r#"{'System': {}}"#, ConfigErrorKind::Syntax),
        (r#"{"System": {"Conns": 01}}"#, ConfigErrorKind::Syntax),
        (r#"{"System": {"Conns": NaN}}"#, ConfigErrorKind::Syntax),
        (
            "{\"System\": {\"Conns\": \"\u{1}\"}}",
            ConfigErrorKind::Syntax,
        ),
        (r#"{"System": {"#, ConfigErrorKind::UnexpectedEof),
        (
            r#"{"System": {"Memory": "12"#,
            ConfigErrorKind::UnexpectedEof,
        ),
        ("", ConfigErrorKind::UnexpectedEof),
        ("   \n  ", ConfigErrorKind::UnexpectedEof),
    ];
    for (json, kind) in cases {
        let error = refused(json);
        assert_eq!(error.kind(), kind, "{json:?}: {error}");
        assert!(error.line() >= 1, "{json:?}: {error}");
    }
}

#[test]
fn readers_report_bad_bytes_and_files_report_their_path() {
    let not_utf8: &[u8] = b"{\"Service\": {\"\xff\xfe\": {}}}";
    let error = PartialLimitConfig::from_json_reader(not_utf8).err();
    let config = error.as_ref().and_then(Error::config);
    assert!(config.is_some(), "{error:?}");

    let missing = std::env::temp_dir().join("rcmgr-no-such-limits-file.json");
    let error = PartialLimitConfig::from_json_file(&missing).err();
    let config = error.as_ref().and_then(Error::config);
    assert_eq!(
        config.map(ConfigError::kind),
        Some(ConfigErrorKind::Io(std::io::ErrorKind::NotFound))
    );
    assert_eq!(config.and_then(ConfigError::file), Some(missing.as_path()));

    let dir = std::env::temp_dir().join(format!("rcmgr-limits-bad-{}", std::process::id()));
    assert!(std::fs::create_dir_all(&dir).is_ok());
    let file = dir.join("bad.json");
    // `-7` spans columns 20 and 21 of line 2; serde_json reports the column after a number.
    assert!(std::fs::write(&file, "{\n  \"System\": {\"FD\": -7}\n}\n").is_ok());
    let error = PartialLimitConfig::from_json_file(&file).err();
    let shown = error.as_ref().map(ToString::to_string).unwrap_or_default();
    assert!(
        shown.starts_with(&format!(
            "limits file {} at System.FD (line 2, column 22): negative limit -7",
            file.display()
        )),
        "{shown}"
    );
    assert!(!error.as_ref().is_some_and(Error::is_temporary));
    assert!(std::fs::remove_dir_all(&dir).is_ok());
}

#[test]
fn errors_are_reported_in_the_order_they_appear() {
    // The first problem is reported; what follows it is not looked at.
    let (_, path, ..) = located(r#"{"System": {"FD": -5}, "Peer": {"bad": {}}} trailing"#);
    assert_eq!(path, "System.FD");
}

/// A reader that hands out one byte per read, so that every multi-byte character and the
/// start of the file are split across reads.
struct ByteByByte<'a>(&'a [u8]);

impl std::io::Read for ByteByByte<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match (self.0.split_first(), buf.first_mut()) {
            (Some((byte, rest)), Some(slot)) => {
                *slot = *byte;
                self.0 = rest;
                Ok(1)
            }
            _ => Ok(0),
        }
    }
}

/// The error each way of reading `bytes` gives: as a slice, from a reader (in one piece and
/// byte by byte) and from a file; they must agree.
fn encoding_error(bytes: &[u8]) -> ConfigError {
    let config = |result: Result<PartialLimitConfig, Error>| match result {
        Err(Error::Config(error)) => *error,
        other => panic!("{bytes:?} is refused as a configuration error: {other:?}"),
    };
    let from_slice = config(PartialLimitConfig::from_json_slice(bytes));
    let from_reader = config(PartialLimitConfig::from_json_reader(bytes));
    let byte_by_byte = config(PartialLimitConfig::from_json_reader(ByteByByte(bytes)));
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("limits.json");
    std::fs::write(&path, bytes).expect("the file is written");
    let from_file = config(PartialLimitConfig::from_json_file(&path));
    for other in [&from_reader, &byte_by_byte] {
        assert_eq!(
            (other.kind(), other.line(), other.column(), other.message()),
            (
                from_slice.kind(),
                from_slice.line(),
                from_slice.column(),
                from_slice.message()
            ),
            "{bytes:?}"
        );
    }
    assert_eq!(from_file.file(), Some(path.as_path()));
    assert_eq!(from_file.message(), from_slice.message());
    assert!(
        from_file
            .to_string()
            .starts_with(&format!("limits file {} (line ", path.display())),
        "{from_file}"
    );
    from_slice
}

#[test]
fn a_byte_order_mark_is_named_not_reported_as_a_missing_value() {
    let error = encoding_error(b"\xef\xbb\xbf{\"System\": {\"Conns\": 10}}");
    assert_eq!(error.kind(), ConfigErrorKind::Syntax);
    assert_eq!((error.line(), error.column()), (1, 1));
    assert!(
        error
            .message()
            .starts_with("starts with a UTF-8 byte order mark (bytes EF BB BF)"),
        "{error}"
    );
    assert!(error.message().contains("save it as UTF-8 without a BOM"));
    let from_str = refused("\u{feff}{}");
    assert_eq!(from_str.message(), error.message());
}

#[test]
fn utf16_and_utf32_files_are_named() {
    let utf16le: Vec<u8> = [0xFF, 0xFE]
        .into_iter()
        .chain("{}".encode_utf16().flat_map(u16::to_le_bytes))
        .collect();
    let utf16be: Vec<u8> = [0xFE, 0xFF]
        .into_iter()
        .chain("{}".encode_utf16().flat_map(u16::to_be_bytes))
        .collect();
    let utf32le = [0xFF, 0xFE, 0, 0, b'{', 0, 0, 0, b'}', 0, 0, 0];
    let utf32be = [0, 0, 0xFE, 0xFF, 0, 0, 0, b'{', 0, 0, 0, b'}'];
    for (bytes, text) in [
        (
            &utf16le[..],
            "is UTF-16 text (it starts with the byte order mark FF FE)",
        ),
        (
            &utf16be[..],
            "is UTF-16 text (it starts with the byte order mark FE FF)",
        ),
        (
            &utf32le[..],
            "is UTF-32 text (it starts with the byte order mark FF FE 00 00)",
        ),
        (
            &utf32be[..],
            "is UTF-32 text (it starts with the byte order mark 00 00 FE FF)",
        ),
    ] {
        let error = encoding_error(bytes);
        assert_eq!((error.line(), error.column()), (1, 1));
        assert!(error.message().starts_with(text), "{error}");
    }
    // UTF-16 without a mark: NUL bytes beside ASCII.
    let bare: Vec<u8> = "{\"System\": {}}"
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    let error = encoding_error(&bare);
    assert_eq!((error.line(), error.column()), (1, 2));
    assert!(error.message().starts_with("holds a NUL byte"), "{error}");
}

#[test]
fn bytes_that_are_not_utf8_are_named_at_their_line_and_column() {
    // "café" in Latin-1, on line 3 after a multi-byte character on line 2.
    let latin1 = b"{\n  \"System\": {\"Conns\": 1}, \"\xc3\xa9t\xc3\xa9\": 1,\n  \"Protocol\": {\"caf\xe9\": {}}\n}";
    let error = encoding_error(latin1);
    assert_eq!(error.kind(), ConfigErrorKind::Syntax);
    assert_eq!((error.line(), error.column()), (3, 20));
    assert!(
        error.message().starts_with("byte 0xE9 is not UTF-8"),
        "{error}"
    );
    assert!(error.message().contains("Latin-1"), "{error}");
    // A character cut short by the end of the file, and an overlong encoding.
    let error = encoding_error(b"{\"System\": {}} \xe2\x82");
    assert!(
        error
            .message()
            .starts_with("ends in the middle of a UTF-8 character"),
        "{error}"
    );
    let error = encoding_error(b"{\"\xc0\xaf\": 1}");
    assert_eq!((error.line(), error.column()), (1, 3));
    assert!(
        error.message().starts_with("byte 0xC0 is not UTF-8"),
        "{error}"
    );
    // Valid multi-byte text still reads, however it is split.
    let good = "{\"Protocol\": {\"/caf\u{e9}/\u{1F600}\": {\"Streams\": 3}}}".as_bytes();
    let read = PartialLimitConfig::from_json_reader(ByteByByte(good)).expect("UTF-8 reads");
    assert_eq!(
        read,
        PartialLimitConfig::from_json_slice(good).expect("UTF-8 reads")
    );
    assert_eq!(read.protocol.len(), 1);
}
