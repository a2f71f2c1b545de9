//! The multistream-select reader of rcmgr-libp2p's stream wrapper (`negotiation.rs`, compiled
//! here from its source, without libp2p) on arbitrary bytes split at arbitrary points: never a
//! panic; every call takes at least one byte and no more than it was given; the body it holds
//! never exceeds the longest message (16383 bytes); and what it finds does not depend on how the
//! bytes are split (the first input byte seeds the split points).

#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code, reason = "the fuzz target uses the reader, not the refusal constants")]
#[path = "../../crates/rcmgr-libp2p/src/negotiation.rs"]
mod negotiation;

use negotiation::{Frames, Step, held_bytes};

/// The longest body a two-byte length allows.
const LONGEST_BODY: usize = (1 << 14) - 1;

/// Every step `bytes` give when fed in the pieces `split` chooses.
fn steps(bytes: &[u8], mut split: impl FnMut() -> usize) -> Vec<Step> {
    let mut frames = Frames::default();
    let mut found = Vec::new();
    let mut rest = bytes;
    let mut piece = &rest[..0];
    loop {
        if piece.is_empty() {
            if rest.is_empty() {
                return found;
            }
            let len = split().clamp(1, rest.len());
            (piece, rest) = rest.split_at(len);
        }
        let (taken, step) = frames.feed(piece);
        assert!(taken >= 1 && taken <= piece.len(), "took {taken} of {}", piece.len());
        assert!(held_bytes(&frames) <= LONGEST_BODY);
        piece = &piece[taken..];
        match step {
            Some(Step::NotMultistream) => {
                found.push(Step::NotMultistream);
                return found;
            }
            Some(step) => found.push(step),
            // Nothing found: the whole piece was taken.
            None => assert!(piece.is_empty()),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, bytes)) = data.split_first() else {
        return;
    };
    let whole = steps(bytes, || usize::MAX);
    let single = steps(bytes, || 1);
    assert_eq!(whole, single, "one piece and single bytes disagree");
    // Pseudo-random pieces of 1 to 64 bytes, from the seed.
    let mut state = u32::from(seed) | 1;
    let pieces = steps(bytes, || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        (state % 64) as usize + 1
    });
    assert_eq!(whole, pieces, "pieces seeded by {seed} disagree");
});
