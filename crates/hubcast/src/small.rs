//! A map and a set that hold their first entry inline.
//!
//! A node holds many collections of one entry: each room's local
//! subscriptions (every connection's personal room has one), each presence
//! member's connections, each user's rooms. A `HashMap` allocates four slots
//! for its first entry, so the first entry is kept inline and the table, boxed, is made for the second: the collection then takes
//! its one entry plus a tag in its owner.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::collections::hash_map;
use std::hash::Hash;
use std::sync::Arc;

/// A map: empty, one entry inline, or a boxed table.
#[derive(Debug, Clone, Default)]
#[allow(clippy::box_collection)]
pub(crate) enum SmallMap<K, V> {
    #[default]
    Empty,
    One(K, V),
    Many(Box<HashMap<K, V>>),
}

impl<K: Hash + Eq, V> SmallMap<K, V> {
    pub(crate) fn len(&self) -> usize {
        match self {
            Self::Empty => 0,
            Self::One(..) => 1,
            Self::Many(m) => m.len(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        match self {
            Self::One(k, v) if (*k).borrow() == key => Some(v),
            Self::Many(m) => m.get_mut(key),
            _ => None,
        }
    }

    /// Adds or replaces `key`'s value; the value replaced, if any.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self {
            Self::Empty => {
                *self = Self::One(key, value);
                None
            }
            Self::One(k, v) if *k == key => Some(std::mem::replace(v, value)),
            Self::One(..) => {
                let Self::One(k, v) = std::mem::take(self) else {
                    unreachable!("matched One above")
                };
                let mut m = HashMap::with_capacity(2);
                m.insert(k, v);
                m.insert(key, value);
                *self = Self::Many(Box::new(m));
                None
            }
            Self::Many(m) => m.insert(key, value),
        }
    }

    pub(crate) fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        match self {
            Self::One(k, _) if (*k).borrow() == key => match std::mem::take(self) {
                Self::One(_, v) => Some(v),
                _ => None,
            },
            Self::Many(m) => {
                let v = m.remove(key);
                if m.is_empty() {
                    *self = Self::Empty;
                }
                v
            }
            _ => None,
        }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        let (one, many) = match self {
            Self::Empty => (None, None),
            Self::One(k, v) => (Some((k, v)), None),
            Self::Many(m) => (None, Some(m.iter())),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }

    pub(crate) fn keys(&self) -> impl Iterator<Item = &K> {
        self.iter().map(|(k, _)| k)
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &V> {
        self.iter().map(|(_, v)| v)
    }

    /// `(key, value)` pairs (a plain enum, not a chain of iterators: the
    /// hub's fan-out walks a room's subscriptions with it).
    pub(crate) fn iter_mut(&mut self) -> IterMut<'_, K, V> {
        match self {
            Self::Empty => IterMut::One(None),
            Self::One(k, v) => IterMut::One(Some((&*k, v))),
            Self::Many(m) => IterMut::Many(m.iter_mut()),
        }
    }

    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.iter_mut().map(|(_, v)| v)
    }
}

/// Iterates over a [`SmallMap`]'s `(key, value)` pairs.
pub(crate) enum IterMut<'a, K, V> {
    One(Option<(&'a K, &'a mut V)>),
    Many(hash_map::IterMut<'a, K, V>),
}

impl<'a, K, V> Iterator for IterMut<'a, K, V> {
    type Item = (&'a K, &'a mut V);

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Self::One(o) => o.take(),
            Self::Many(i) => i.next(),
        }
    }
}

/// A set: a [`SmallMap`] without values.
#[derive(Debug, Clone, Default)]
pub(crate) struct SmallSet<T>(SmallMap<T, ()>);

impl<T: Hash + Eq> SmallSet<T> {
    /// Adds `value`; false if it was there already.
    pub(crate) fn insert(&mut self, value: T) -> bool {
        self.0.insert(value, ()).is_none()
    }

    /// Removes `value`; false if it was not there.
    pub(crate) fn remove<Q>(&mut self, value: &Q) -> bool
    where
        T: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.remove(value).is_some()
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.0.keys()
    }
}

impl<T: Hash + Eq> From<T> for SmallSet<T> {
    fn from(value: T) -> Self {
        Self(SmallMap::One(value, ()))
    }
}

/// The key `map` already holds for `name`, shared, or a new one: a name
/// kept in several places (a room's in the hub, its members' lists, a
/// user's rooms) is allocated once.
pub(crate) fn shared_key<V>(map: &HashMap<Arc<str>, V>, name: &str) -> Arc<str> {
    match map.get_key_value(name) {
        Some((key, _)) => key.clone(),
        None => Arc::from(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(m: &mut SmallMap<u64, u32>) -> Vec<(u64, u32)> {
        let mut v: Vec<_> = m.iter_mut().map(|(k, v)| (*k, *v)).collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn map_one_inline_then_a_table_then_empty() {
        let mut m = SmallMap::default();
        assert!(m.is_empty());
        assert_eq!(m.remove(&1), None);
        assert_eq!(m.insert(1, 10), None);
        assert!(matches!(m, SmallMap::One(1, 10)));
        assert_eq!(m.insert(1, 11), Some(10));
        assert_eq!(m.len(), 1, "same key replaces");
        assert_eq!(m.get_mut(&1), Some(&mut 11));
        assert_eq!(m.get_mut(&2), None);
        m.insert(2, 20);
        m.insert(3, 30);
        assert!(matches!(m, SmallMap::Many(_)));
        assert_eq!(pairs(&mut m), vec![(1, 11), (2, 20), (3, 30)]);
        if let Some(v) = m.get_mut(&2) {
            *v += 1;
        }
        assert_eq!(m.values().copied().sum::<u32>(), 11 + 21 + 30);
        for v in m.values_mut() {
            *v += 1;
        }
        assert_eq!(m.remove(&2), Some(22));
        assert_eq!(m.remove(&2), None);
        assert_eq!(m.len(), 2);
        assert_eq!(m.remove(&1), Some(12));
        assert_eq!(m.remove(&3), Some(31));
        assert!(m.is_empty());
        assert!(matches!(m, SmallMap::Empty));
    }

    #[test]
    fn map_single_entry_is_removed_and_iterated() {
        let mut m = SmallMap::default();
        m.insert(7, 70);
        assert_eq!(pairs(&mut m), vec![(7, 70)]);
        assert_eq!(m.values().count(), 1);
        assert_eq!(m.keys().copied().collect::<Vec<_>>(), [7]);
        assert_eq!(m.remove(&8), None);
        assert_eq!(m.remove(&7), Some(70));
        assert_eq!(m.values().count(), 0);
        assert_eq!(pairs(&mut m), vec![]);
    }

    #[test]
    fn set_grows_from_inline_to_a_table_and_back_to_empty() {
        let mut s: SmallSet<Arc<str>> = SmallSet::default();
        assert!(s.is_empty());
        assert!(!s.remove("a"));
        assert!(s.insert("a".into()));
        assert!(!s.insert("a".into()), "already there");
        assert!(matches!(s.0, SmallMap::One(..)));
        assert!(!s.remove("b"));
        assert!(s.insert("b".into()));
        assert!(s.insert("c".into()));
        assert!(matches!(s.0, SmallMap::Many(_)));
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
    fn set_one_element_is_removed() {
        let mut s = SmallSet::from(7u32);
        assert_eq!(s.len(), 1);
        assert_eq!(s.iter().copied().collect::<Vec<_>>(), [7]);
        assert!(s.remove(&7));
        assert!(s.is_empty());
    }

    #[test]
    fn a_set_takes_a_tag_and_a_fat_pointer() {
        assert_eq!(std::mem::size_of::<SmallSet<Arc<str>>>(), 24);
    }

    #[test]
    fn shared_key_reuses_the_maps_key() {
        let mut m: HashMap<Arc<str>, u32> = HashMap::new();
        let a = shared_key(&m, "room");
        m.insert(a.clone(), 1);
        assert!(Arc::ptr_eq(&shared_key(&m, "room"), &a));
        assert!(!Arc::ptr_eq(&shared_key(&m, "other"), &a));
    }
}
