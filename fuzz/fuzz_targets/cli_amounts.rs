//! The command line's sizes, durations and counts: any text is read or refused with a
//! message, never a panic; what is read is within the bounds the commands run with, and
//! reads the same through clap as through the parsers themselves.

#![no_main]

use clap::Parser;
use libfuzzer_sys::fuzz_target;
use rcmgr_cli::{
    Cli, Command,
    cli::{MAX_PEERS, MAX_RUN_TIME, MAX_THREADS, parse_peers, parse_run_time, parse_threads},
    units::{ByteSize, Seconds},
};

fuzz_target!(|data: &[u8]| {
    // Command-line arguments reach the parsers as text.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(size) = text.parse::<ByteSize>() {
        let _ = size.to_string();
        // A size reads back from its byte count exactly.
        assert_eq!(size.bytes().to_string().parse::<ByteSize>(), Ok(size));
    } else if let Err(err) = text.parse::<ByteSize>() {
        assert!(err.to_string().starts_with("invalid size"), "{err}");
    }
    match text.parse::<Seconds>() {
        Ok(seconds) => {
            let _ = seconds.to_string();
            // Whole nanoseconds, within what a u64 holds.
            let nanos = seconds.duration().as_nanos();
            assert!(nanos <= u128::from(u64::MAX));
            let again = format!("{nanos}").parse::<u128>().ok();
            assert_eq!(again, Some(nanos));
        }
        Err(err) => assert!(err.to_string().starts_with("invalid duration"), "{err}"),
    }
    let run_time = parse_run_time(text);
    match &run_time {
        Ok(run_time) => assert!(run_time.duration() <= MAX_RUN_TIME),
        Err(err) => assert!(!err.is_empty()),
    }
    let peers = parse_peers(text);
    match &peers {
        Ok(peers) => assert!(*peers <= MAX_PEERS),
        Err(err) => assert!(!err.is_empty()),
    }
    let threads = parse_threads(text);
    match &threads {
        Ok(threads) => assert!(threads.get() <= MAX_THREADS),
        Err(err) => assert!(!err.is_empty()),
    }

    // The same text as each option that takes an amount: clap agrees with the parsers.
    let simulate = |option: &str| Cli::try_parse_from(["rcmgr", "simulate", option, text]);
    match simulate("--duration") {
        Ok(Cli {
            command: Command::Simulate(args),
        }) => assert_eq!(Ok(args.duration), run_time),
        Ok(_) => unreachable!("simulate parses as simulate"),
        Err(err) => {
            let _ = err.to_string();
            assert!(run_time.is_err() || text.starts_with('-'));
        }
    }
    match simulate("--peers") {
        Ok(Cli {
            command: Command::Simulate(args),
        }) => assert_eq!(args.peers.ok_or(()), peers.map_err(|_| ())),
        Ok(_) => unreachable!("simulate parses as simulate"),
        Err(err) => {
            let _ = err.to_string();
            assert!(peers.is_err() || text.starts_with('-'));
        }
    }
    match simulate("--threads") {
        Ok(Cli {
            command: Command::Simulate(args),
        }) => assert_eq!(args.threads.ok_or(()), threads.map_err(|_| ())),
        Ok(_) => unreachable!("simulate parses as simulate"),
        Err(err) => {
            let _ = err.to_string();
        }
    }
    for command in ["limits", "simulate"] {
        match Cli::try_parse_from(["rcmgr", command, "--memory", text, "--fds", "1024"]) {
            Ok(Cli {
                command: Command::Limits(args),
            }) => assert_eq!(args.sizing.memory, text.parse().ok()),
            Ok(Cli {
                command: Command::Simulate(args),
            }) => assert_eq!(args.sizing.memory, text.parse().ok()),
            Ok(_) => unreachable!("the command asked for"),
            Err(err) => {
                let _ = err.to_string();
            }
        }
    }
});
