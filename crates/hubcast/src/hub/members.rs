//! A room's local subscriptions, keyed by connection.
//!
//! Most rooms on a node hold one local connection: every connection's
//! personal room, and small rooms spread over a cluster. A hash table's
//! first allocation (four entries) cost such a room about 380 bytes, so a
//! single subscription is kept inline and the table is made for the second.

use std::collections::HashMap;
use std::collections::hash_map;

use crate::broker::ConnKey;

/// Subscriptions by connection key: none, one inline, or a table.
#[derive(Debug, Default)]
pub enum Members<T> {
    #[default]
    Empty,
    One(ConnKey, T),
    Many(HashMap<ConnKey, T>),
}

impl<T> Members<T> {
    pub fn len(&self) -> usize {
        match self {
            Self::Empty => 0,
            Self::One(..) => 1,
            Self::Many(m) => m.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get_mut(&mut self, key: ConnKey) -> Option<&mut T> {
        match self {
            Self::One(k, v) if *k == key => Some(v),
            Self::Many(m) => m.get_mut(&key),
            _ => None,
        }
    }

    /// Adds or replaces `key`'s value.
    pub fn insert(&mut self, key: ConnKey, value: T) {
        match self {
            Self::Empty => *self = Self::One(key, value),
            Self::One(k, v) if *k == key => *v = value,
            Self::One(..) => {
                let Self::One(k, v) = std::mem::take(self) else {
                    unreachable!("matched One above")
                };
                let mut m = HashMap::with_capacity(2);
                m.insert(k, v);
                m.insert(key, value);
                *self = Self::Many(m);
            }
            Self::Many(m) => {
                m.insert(key, value);
            }
        }
    }

    pub fn remove(&mut self, key: ConnKey) -> Option<T> {
        match self {
            Self::One(k, _) if *k == key => match std::mem::take(self) {
                Self::One(_, v) => Some(v),
                _ => None,
            },
            Self::Many(m) => {
                let v = m.remove(&key);
                if m.is_empty() {
                    *self = Self::Empty;
                }
                v
            }
            _ => None,
        }
    }

    pub fn iter_mut(&mut self) -> IterMut<'_, T> {
        match self {
            Self::Empty => IterMut::One(None),
            Self::One(k, v) => IterMut::One(Some((&*k, v))),
            Self::Many(m) => IterMut::Many(m.iter_mut()),
        }
    }

    pub fn values(&self) -> impl Iterator<Item = &T> {
        let (one, many) = match self {
            Self::Empty => (None, None),
            Self::One(_, v) => (Some(v), None),
            Self::Many(m) => (None, Some(m.values())),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.iter_mut().map(|(_, v)| v)
    }
}

/// Iterates over `(key, value)` pairs.
pub enum IterMut<'a, T> {
    One(Option<(&'a ConnKey, &'a mut T)>),
    Many(hash_map::IterMut<'a, ConnKey, T>),
}

impl<'a, T> Iterator for IterMut<'a, T> {
    type Item = (&'a ConnKey, &'a mut T);

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Self::One(o) => o.take(),
            Self::Many(i) => i.next(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(m: &mut Members<u32>) -> Vec<(ConnKey, u32)> {
        let mut v: Vec<_> = m.iter_mut().map(|(k, v)| (*k, *v)).collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn one_inline_then_a_table_then_empty() {
        let mut m = Members::default();
        assert!(m.is_empty());
        assert_eq!(m.remove(1), None);
        m.insert(1, 10);
        assert!(matches!(m, Members::One(1, 10)));
        m.insert(1, 11);
        assert_eq!(m.len(), 1, "same key replaces");
        assert_eq!(m.get_mut(1), Some(&mut 11));
        assert_eq!(m.get_mut(2), None);
        m.insert(2, 20);
        m.insert(3, 30);
        assert!(matches!(m, Members::Many(_)));
        assert_eq!(keys(&mut m), vec![(1, 11), (2, 20), (3, 30)]);
        if let Some(v) = m.get_mut(2) {
            *v += 1;
        }
        assert_eq!(m.values().copied().sum::<u32>(), 11 + 21 + 30);
        for v in m.values_mut() {
            *v += 1;
        }
        assert_eq!(m.remove(2), Some(22));
        assert_eq!(m.remove(2), None);
        assert_eq!(m.len(), 2);
        assert_eq!(m.remove(1), Some(12));
        assert_eq!(m.remove(3), Some(31));
        assert!(m.is_empty());
        assert!(matches!(m, Members::Empty));
    }

    #[test]
    fn a_single_member_is_removed_and_iterated() {
        let mut m = Members::default();
        m.insert(7, 70);
        assert_eq!(keys(&mut m), vec![(7, 70)]);
        assert_eq!(m.values().count(), 1);
        assert_eq!(m.remove(8), None);
        assert_eq!(m.remove(7), Some(70));
        assert_eq!(m.values().count(), 0);
        assert_eq!(keys(&mut m), vec![]);
    }
}
