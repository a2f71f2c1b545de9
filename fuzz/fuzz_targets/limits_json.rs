//! The JSON limits parser: any text either parses or gets an error (never a panic), and what
//! parses survives being written and read again, compact and indented, unchanged.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rcmgr::{ConcreteLimitConfig, PartialLimitConfig, ScalingLimitConfig};

fuzz_target!(|data: &[u8]| {
    // The format is text: bytes that are not UTF-8 say nothing about the parser.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = match PartialLimitConfig::from_json_str(text) {
        Ok(parsed) => parsed,
        Err(error) => {
            // Errors are expected; they must describe themselves without panicking.
            let _ = error.to_string();
            return;
        }
    };
    // The reader entry point reads the same configuration.
    let via_reader = PartialLimitConfig::from_json_reader(data).ok();
    assert_eq!(via_reader.as_ref(), Some(&parsed));

    // Parse -> serialize -> parse gives the same configuration, and writing is deterministic.
    let compact = parsed.to_json_string();
    let reparsed = PartialLimitConfig::from_json_str(&compact).ok();
    assert_eq!(reparsed.as_ref(), Some(&parsed), "compact form: {compact}");
    assert_eq!(reparsed.map(|r| r.to_json_string()), Some(compact));
    let pretty = parsed.to_json_pretty();
    let reparsed = PartialLimitConfig::from_json_str(&pretty).ok();
    assert_eq!(reparsed.as_ref(), Some(&parsed), "indented form: {pretty}");

    // What parses builds into limits that are valid: written out and built again, unchanged.
    let defaults = ScalingLimitConfig::default()
        .with_libp2p_defaults()
        .scale(1 << 30, 1024);
    let built = parsed.build(&defaults);
    // go's format carries no address-based limits: a build takes them from its defaults.
    let mut bare = ConcreteLimitConfig::infinite();
    bare.ip = built.ip.clone();
    assert_eq!(built.to_partial().build(&bare), built);
    let mut layered = parsed;
    layered.apply(&built.to_partial());
    assert_eq!(layered.build(&bare), built);
});
