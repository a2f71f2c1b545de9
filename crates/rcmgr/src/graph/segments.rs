//! [`Segments`]: append-only storage at stable indices, read without a lock.
//!
//! The protocol and service scopes, and each peer's scopes within them, live in slots that a
//! handle names by index: an index stays valid for the storage's whole life (slots are
//! reused, never moved or freed), so reaching a slot is a bounds check and a load, with no
//! lock, map or reference count. Segment `k` holds `FIRST << k` slots and is allocated the
//! first time an index falls in it.
//!
//! # Synchronization
//!
//! Appends are serialized by the caller's lock. An append writes the slot (a [`OnceSlot`],
//! which publishes with Release) before it raises the length with Release; a reader that
//! read the length with Acquire therefore finds every slot below it written.

use crate::sync::{AtomicU32, OnceSlot, Ordering};

/// Enough segments for every `u32` index.
const SEGMENTS: usize = 32;

/// Append-only storage; see the module docs. `FIRST` (a power of two) is the size of the
/// first segment.
pub(crate) struct Segments<T, const FIRST: usize> {
    segments: [OnceSlot<Box<[OnceSlot<T>]>>; SEGMENTS],
    len: AtomicU32,
}

impl<T, const FIRST: usize> Segments<T, FIRST> {
    pub(crate) fn new() -> Self {
        Segments {
            segments: std::array::from_fn(|_| OnceSlot::new()),
            len: AtomicU32::new(0),
        }
    }

    /// How many slots were appended.
    #[inline]
    pub(crate) fn len(&self) -> u32 {
        // Ordering: Acquire — pairs with the Release in `push`: every slot below is written.
        self.len.load(Ordering::Acquire)
    }

    /// The slot at `index`, if one was appended there.
    #[inline]
    pub(crate) fn get(&self, index: u32) -> Option<&T> {
        let (segment, offset) = locate::<FIRST>(index);
        self.segments.get(segment)?.get()?.get(offset)?.get()
    }

    /// Every slot appended so far, with its index.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &T)> {
        (0..self.len()).filter_map(move |index| Some((index, self.get(index)?)))
    }

    /// Appends `value`; returns its index, or gives it back if the storage is full. The caller
    /// holds the lock that serializes appends.
    pub(crate) fn push(&self, value: T) -> Result<u32, T> {
        // Ordering: Relaxed — appends are serialized by the caller's lock.
        let index = self.len.load(Ordering::Relaxed);
        let (segment, offset) = locate::<FIRST>(index);
        let Some(slots) = self.segments.get(segment) else {
            return Err(value);
        };
        if slots.get().is_none() {
            let size = FIRST << segment;
            let _ = slots.set((0..size).map(|_| OnceSlot::new()).collect());
        }
        let Some(slot) = slots.get().and_then(|slots| slots.get(offset)) else {
            return Err(value);
        };
        slot.set(value)?;
        // Ordering: Release — a reader that sees the new length finds the slot set above.
        self.len.store(index + 1, Ordering::Release);
        Ok(index)
    }
}

impl<T, const FIRST: usize> std::fmt::Debug for Segments<T, FIRST> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segments")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

/// The segment and offset of `index`: segment `k` holds `FIRST << k` slots, so it starts at
/// `FIRST * (2^k - 1)`.
#[inline]
fn locate<const FIRST: usize>(index: u32) -> (usize, usize) {
    let shifted = u64::from(index) + FIRST as u64;
    let segment = (63 - shifted.leading_zeros() - FIRST.trailing_zeros()) as usize;
    let start = (FIRST as u64) << segment;
    (segment, (shifted - start) as usize)
}

#[cfg(all(test, not(rcmgr_loom)))]
mod tests {
    use super::*;

    #[test]
    fn indices_map_to_segments_without_gaps() {
        assert_eq!(locate::<4>(0), (0, 0));
        assert_eq!(locate::<4>(3), (0, 3));
        assert_eq!(locate::<4>(4), (1, 0));
        assert_eq!(locate::<4>(11), (1, 7));
        assert_eq!(locate::<4>(12), (2, 0));
        let (segment, offset) = locate::<4>(u32::MAX);
        assert!(segment < SEGMENTS && offset < 4 << segment);
        let (segment, offset) = locate::<64>(u32::MAX);
        assert!(segment < SEGMENTS && offset < 64 << segment);
    }

    #[test]
    fn pushed_values_stay_where_they_were_put() {
        let segments: Segments<u32, 4> = Segments::new();
        for value in 0..100 {
            assert_eq!(segments.push(value), Ok(value));
        }
        assert_eq!(segments.len(), 100);
        assert!(segments.iter().all(|(index, value)| index == *value));
        assert_eq!(segments.get(100), None);
    }
}
