//! Interned slugs: a group names its slug by a small id, so matching a
//! report to its group compares and hashes an id and never reaches into a
//! string on the heap (a cache miss per report otherwise).

use std::hash::BuildHasher;

use foldhash::fast::RandomState;

use hashbrown::HashTable;

/// Interned slugs: each distinct slug is stored once, however many groups
/// use it, and forgotten when the last of them goes.
#[derive(Debug, Default)]
pub(super) struct Slugs {
    ids: HashTable<u32>,
    entries: Vec<SlugEntry>,
    free: Vec<u32>,
}

#[derive(Debug)]
struct SlugEntry {
    text: Box<str>,
    hash: u64,
    groups: u32,
}

impl Slugs {
    pub fn intern(&mut self, state: &RandomState, text: &str) -> u32 {
        let hash = state.hash_one(text);
        let entries = &self.entries;
        if let Some(&id) = self.ids.find(hash, |&id| &*entries[id as usize].text == text) {
            return id;
        }
        let entry = SlugEntry {
            text: text.into(),
            hash,
            groups: 0,
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.entries[id as usize] = entry;
                id
            }
            None => {
                self.entries.push(entry);
                (self.entries.len() - 1) as u32
            }
        };
        let entries = &self.entries;
        self.ids.insert_unique(hash, id, |&id| entries[id as usize].hash);
        id
    }

    pub fn text(&self, id: u32) -> &str {
        &self.entries[id as usize].text
    }

    pub fn add_group(&mut self, id: u32) {
        self.entries[id as usize].groups += 1;
    }

    pub fn remove_group(&mut self, id: u32) {
        let entry = &mut self.entries[id as usize];
        entry.groups -= 1;
        if entry.groups == 0 {
            self.forget(id);
        }
    }

    /// Forgets a slug interned for a report that formed no group.
    pub fn sweep_one(&mut self, id: u32) {
        if self.entries[id as usize].groups == 0 {
            self.forget(id);
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    fn forget(&mut self, id: u32) {
        let entry = &mut self.entries[id as usize];
        let hash = entry.hash;
        entry.text = Box::default();
        if let Ok(slot) = self.ids.find_entry(hash, |&other| other == id) {
            slot.remove();
        }
        self.free.push(id);
    }
}
