//! A set of a room's offsets, kept as sorted disjoint ranges: what one
//! subscriber received, or which publishes into a room were acknowledged.
//! Offsets mostly arrive in order and without gaps, so a run of any length
//! usually costs one range, and the next offset only extends the last one.

/// Offsets, as sorted, disjoint, non-adjacent inclusive ranges.
#[derive(Debug, Default, Clone)]
pub(super) struct Offsets {
    ranges: Vec<(u64, u64)>,
}

impl Offsets {
    /// Adds `o`; false when it was already in.
    pub(super) fn insert(&mut self, o: u64) -> bool {
        // The common case first: the next offset, or a later one.
        match self.ranges.last_mut() {
            // Checked: an offset is the server's, and u64::MAX must not
            // overflow here.
            Some((_, end)) if end.checked_add(1) == Some(o) => {
                *end = o;
                return true;
            }
            Some((_, end)) if end.checked_add(1).is_some_and(|next| o > next) => {
                self.ranges.push((o, o));
                return true;
            }
            None => {
                self.ranges.push((o, o));
                return true;
            }
            _ => {}
        }
        // The first range that ends at or after `o`.
        let i = self.ranges.partition_point(|&(_, end)| end < o);
        if self.ranges.get(i).is_some_and(|&(start, _)| start <= o) {
            return false;
        }
        let joins_prev = i > 0 && self.ranges[i - 1].1 + 1 == o;
        let joins_next = self
            .ranges
            .get(i)
            .is_some_and(|&(start, _)| o.checked_add(1) == Some(start));
        match (joins_prev, joins_next) {
            (true, true) => {
                self.ranges[i - 1].1 = self.ranges[i].1;
                self.ranges.remove(i);
            }
            (true, false) => self.ranges[i - 1].1 = o,
            (false, true) => self.ranges[i].0 = o,
            (false, false) => self.ranges.insert(i, (o, o)),
        }
        true
    }

    /// How many offsets there are (the tests' check of the ranges).
    #[cfg(test)]
    pub(super) fn len(&self) -> u64 {
        self.ranges.iter().map(|&(s, e)| e - s + 1).sum()
    }

    /// How many of these offsets `other` does not hold.
    pub(super) fn count_not_in(&self, other: &Offsets) -> u64 {
        let mut missing = 0;
        let mut j = 0;
        for &(start, end) in &self.ranges {
            let mut covered = 0;
            // Ranges of `other` before this one cannot overlap later ones
            // of `self` either: both lists are sorted.
            while other.ranges.get(j).is_some_and(|&(_, e)| e < start) {
                j += 1;
            }
            let mut k = j;
            while let Some(&(s, e)) = other.ranges.get(k) {
                if s > end {
                    break;
                }
                covered += e.min(end) - s.max(start) + 1;
                k += 1;
            }
            missing += end - start + 1 - covered;
        }
        missing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(offsets: &[u64]) -> Offsets {
        let mut set = Offsets::default();
        for &o in offsets {
            set.insert(o);
        }
        set
    }

    #[test]
    fn in_order_offsets_are_one_range_and_repeats_are_told() {
        let mut set = Offsets::default();
        for o in 1..=1000 {
            assert!(set.insert(o));
        }
        assert_eq!(set.ranges, [(1, 1000)]);
        assert!(!set.insert(1));
        assert!(!set.insert(500));
        assert!(!set.insert(1000));
        assert_eq!(set.len(), 1000);
    }

    #[test]
    fn out_of_order_offsets_fill_gaps_and_merge() {
        let mut set = of(&[5, 1, 3, 9]);
        assert_eq!(set.ranges, [(1, 1), (3, 3), (5, 5), (9, 9)]);
        assert!(set.insert(2));
        assert_eq!(set.ranges, [(1, 3), (5, 5), (9, 9)]);
        assert!(set.insert(4));
        assert_eq!(set.ranges, [(1, 5), (9, 9)]);
        assert!(set.insert(8));
        assert!(set.insert(7));
        assert_eq!(set.ranges, [(1, 5), (7, 9)]);
        assert!(!set.insert(3) && !set.insert(8));
        assert!(set.insert(6));
        assert_eq!(set.ranges, [(1, 9)]);
        assert_eq!(set.len(), 9);
    }

    #[test]
    fn what_one_set_holds_and_the_other_does_not() {
        let acked = of(&[1, 2, 3, 5, 6, 7, 10]);
        let received = of(&[1, 2, 3, 4, 6, 8, 9, 10, 11]);
        // Acknowledged but not received: 5 and 7.
        assert_eq!(acked.count_not_in(&received), 2);
        // Received without an acknowledgement: 4, 8, 9 and 11.
        assert_eq!(received.count_not_in(&acked), 4);
        assert_eq!(acked.count_not_in(&acked), 0);
        assert_eq!(acked.count_not_in(&Offsets::default()), 7);
        assert_eq!(Offsets::default().count_not_in(&acked), 0);
    }
}
