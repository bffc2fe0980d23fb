//! Shared storage of the rollup: interned slugs and reusable session buffers.

use hashbrown::HashTable;

use super::group::{FastState, Session};

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
    pub fn intern(&mut self, state: &FastState, text: &str) -> u32 {
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

    /// Forgets slugs interned for reports that formed no group.
    pub fn sweep(&mut self) {
        let unused: Vec<u32> = self
            .ids
            .iter()
            .copied()
            .filter(|&id| self.entries[id as usize].groups == 0)
            .collect();
        for id in unused {
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

/// Session buffers of dropped groups, kept for new groups: freeing them one
/// by one cost half of a rollup's time, and new groups keep coming. Holds no
/// more slots than the most sessions ever held at once.
#[derive(Debug, Default)]
pub(super) struct BufferPool {
    /// Off only to measure what the pool buys.
    pub disabled: bool,
    buffers: Vec<Vec<Session>>,
    slots: usize,
    high_water: usize,
}

impl BufferPool {
    pub fn new(disabled: bool) -> Self {
        Self {
            disabled,
            ..Self::default()
        }
    }

    pub fn note_held(&mut self, sessions: usize) {
        self.high_water = self.high_water.max(sessions);
    }

    pub fn take(&mut self) -> Vec<Session> {
        match self.buffers.pop() {
            Some(buffer) => {
                self.slots -= buffer.capacity();
                buffer
            }
            None => Vec::new(),
        }
    }

    pub fn give(&mut self, mut buffer: Vec<Session>) {
        if self.disabled || buffer.capacity() == 0 || self.slots + buffer.capacity() > self.high_water {
            return;
        }
        buffer.clear();
        self.slots += buffer.capacity();
        self.buffers.push(buffer);
    }
}
