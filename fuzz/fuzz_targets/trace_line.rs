//! Trace lines and scope names: any line either reads as an event (which then writes itself
//! back to a line that reads as the same event) or is refused, never a panic; the same for
//! scope names. Part of the input builds deeply nested span names (`conn-1.span-1.span-1…`),
//! up to 100,000 levels, alone and inside a trace line, since a trace from elsewhere may hold
//! anything.
//!
//! `RCMGR_FUZZ_MAX_DEPTH` lowers the deepest nesting built (for a run that looks at the rest
//! while deep names are known to fail).

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rcmgr::{ScopeName, TraceEvent};

/// The deepest span nesting built: 100,000 levels unless `RCMGR_FUZZ_MAX_DEPTH` says less.
fn max_depth() -> usize {
    static DEPTH: OnceLock<usize> = OnceLock::new();
    *DEPTH.get_or_init(|| {
        std::env::var("RCMGR_FUZZ_MAX_DEPTH")
            .ok()
            .and_then(|depth| depth.parse().ok())
            .unwrap_or(100_000)
            .min(100_000)
    })
}

/// Checks one scope name: read, written and read again to the same name.
fn check_name(text: &str) {
    if let Ok(name) = text.parse::<ScopeName>() {
        let written = name.to_string();
        assert_eq!(written.parse::<ScopeName>().ok(), Some(name), "{written}");
    }
}

/// Checks one trace line: read, written and read again to the same event.
fn check_line(line: &str) {
    match serde_json::from_str::<TraceEvent>(line) {
        Ok(event) => {
            let written = serde_json::to_string(&event).expect("an event writes itself");
            let again: TraceEvent =
                serde_json::from_str(&written).unwrap_or_else(|err| panic!("{err}: {written}"));
            assert_eq!(again, event, "{written}");
            let _ = event.totals();
        }
        Err(err) => {
            let _ = err.to_string();
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 0x80 == 0 {
        let Ok(text) = std::str::from_utf8(rest) else {
            return;
        };
        check_line(text);
        check_name(text);
        return;
    }
    // Deep nesting: two bytes of the input say how deep (the first byte's low bits scale it
    // up to 100,000 levels), the rest is the owner's name.
    let (depth_bytes, owner) = rest.split_at(rest.len().min(2));
    let Ok(owner) = std::str::from_utf8(owner) else {
        return;
    };
    let depth = depth_bytes
        .iter()
        .fold(0usize, |depth, b| depth * 256 + usize::from(*b))
        .saturating_mul(usize::from(mode & 0x7f) + 1)
        .min(max_depth());
    let owner = if owner.is_empty() { "conn-1" } else { owner };
    let mut name = String::with_capacity(owner.len() + depth * 7);
    name.push_str(owner);
    for level in 0..depth {
        name.push_str(&format!(".span-{}", level % 10));
    }
    check_name(&name);
    let line = format!(
        r#"{{"Time":"2024-05-01T12:00:00Z","Type":"reserve_memory","Name":{},"Delta":1,"Memory":1}}"#,
        serde_json::to_string(&name).expect("a string writes itself")
    );
    check_line(&line);
});
