//! A set that holds its first element inline.
//!
//! The memory engine keeps, per user, the rooms it is present in and, per
//! room member, its connections: one element nearly always (an anonymous
//! user has one connection in a room or two). A `HashSet`'s first
//! allocation (four slots) cost each about 100 bytes. The table of a
//! larger set is boxed, so the set takes 24 bytes in its owner, not 56 (the
//! per-user and per-member records sit in tables sized for the 15,000
//! users of a busy node).

use std::borrow::Borrow;
use std::collections::HashSet;
use std::hash::Hash;

#[derive(Debug, Clone, Default)]
#[allow(clippy::box_collection)]
pub enum SmallSet<T> {
    #[default]
    Empty,
    One(T),
    Many(Box<HashSet<T>>),
}

impl<T: Hash + Eq> SmallSet<T> {
    /// Adds `value`; false if it was there already.
    pub fn insert(&mut self, value: T) -> bool {
        match self {
            Self::Empty => {
                *self = Self::One(value);
                true
            }
            Self::One(v) if *v == value => false,
            Self::One(_) => {
                let Self::One(v) = std::mem::take(self) else {
                    unreachable!("matched One above")
                };
                let mut set = HashSet::with_capacity(2);
                set.insert(v);
                set.insert(value);
                *self = Self::Many(Box::new(set));
                true
            }
            Self::Many(set) => set.insert(value),
        }
    }

    /// Removes `value`; false if it was not there.
    pub fn remove<Q>(&mut self, value: &Q) -> bool
    where
        T: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        match self {
            Self::One(v) if (*v).borrow() == value => {
                *self = Self::Empty;
                true
            }
            Self::Many(set) => {
                let removed = set.remove(value);
                if set.is_empty() {
                    *self = Self::Empty;
                }
                removed
            }
            _ => false,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Self::Empty => 0,
            Self::One(_) => 1,
            Self::Many(set) => set.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        let (one, many) = match self {
            Self::Empty => (None, None),
            Self::One(v) => (Some(v), None),
            Self::Many(set) => (None, Some(set.iter())),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }
}

impl<T: Hash + Eq> From<T> for SmallSet<T> {
    fn from(value: T) -> Self {
        Self::One(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn grows_from_inline_to_a_table_and_back_to_empty() {
        let mut s: SmallSet<Arc<str>> = SmallSet::default();
        assert!(s.is_empty());
        assert!(!s.remove("a"));
        assert!(s.insert("a".into()));
        assert!(!s.insert("a".into()), "already there");
        assert!(matches!(s, SmallSet::One(_)));
        assert!(!s.remove("b"));
        assert!(s.insert("b".into()));
        assert!(s.insert("c".into()));
        assert!(matches!(s, SmallSet::Many(_)));
        let mut all: Vec<&str> = s.iter().map(|v| &**v).collect();
        all.sort_unstable();
        assert_eq!(all, ["a", "b", "c"]);
        assert!(s.remove("b"));
        assert!(!s.remove("b"));
        assert_eq!(s.len(), 2);
        assert!(s.remove("a") && s.remove("c"));
        assert!(s.is_empty());
        assert_eq!(s.iter().count(), 0);
    }

    #[test]
    fn takes_a_tag_and_a_fat_pointer() {
        assert_eq!(std::mem::size_of::<SmallSet<Arc<str>>>(), 24);
    }

    #[test]
    fn one_element_is_removed() {
        let mut s = SmallSet::from(7u32);
        assert_eq!(s.len(), 1);
        assert_eq!(s.iter().copied().collect::<Vec<_>>(), [7]);
        assert!(s.remove(&7));
        assert!(s.is_empty());
    }
}
