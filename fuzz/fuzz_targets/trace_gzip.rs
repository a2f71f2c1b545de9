//! `rcmgr trace`'s reader on any input, gzip-compressed or not: a summary or a reason there
//! is none, never a panic, within bounded memory (lines past the cap are skipped unread,
//! series and groups are bounded); the summary renders and plots.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use rcmgr_cli::commands::trace::Summary;

fuzz_target!(|data: &[u8]| {
    match Summary::from_reader(data) {
        Ok(summary) => {
            let text = summary.render(Path::new("fuzz.jsonl"));
            assert!(text.starts_with("Trace fuzz.jsonl: "), "{text}");
            assert_eq!(text.contains("the trace is partial"), summary.dropped() > 0);
            // Plotting is the slow part: only for small inputs.
            if data.len() < 512 {
                let plot = std::env::temp_dir()
                    .join(format!("rcmgr-fuzz-trace-{}.svg", std::process::id()));
                summary.plot(&plot).expect("the plot is drawn");
            }
        }
        Err(reason) => assert!(!reason.is_empty()),
    }
});
