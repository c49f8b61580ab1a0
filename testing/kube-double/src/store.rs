//! The object store: every object of every type under one lock, one global `resourceVersion`
//! counter, the bounded history of changes that watches replay, and the indexes garbage collection
//! uses (uid → object, owner uid → dependents).

use crate::fields::Managed;
use crate::meta::{self, owner_refs};
use crate::resources::ResourceType;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

/// Where an object lives: resource (all versions share storage), namespace (`""` for
/// cluster-scoped) and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct ObjKey {
    pub resource: String,
    pub namespace: String,
    pub name: String,
}

/// A stored object and its field ownership.
#[derive(Clone, Debug)]
pub(crate) struct Stored {
    pub obj: Value,
    pub managed: Managed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EventType {
    Added,
    Modified,
    Deleted,
}

/// One change, as watches replay it.
#[derive(Clone, Debug)]
pub(crate) struct Change {
    pub rv: u64,
    pub resource: String,
    pub namespace: String,
    pub kind: EventType,
    pub obj: Arc<Value>,
    /// The object before a modification (selector transitions need it).
    pub prev: Option<Arc<Value>>,
}

/// All server state, behind the server's mutex.
pub(crate) struct State {
    pub rv: u64,
    pub types: BTreeMap<(String, String, String), Arc<ResourceType>>,
    pub objects: BTreeMap<ObjKey, Stored>,
    pub uids: HashMap<String, ObjKey>,
    pub dependents: HashMap<String, BTreeSet<ObjKey>>,
    pub history: VecDeque<Change>,
    pub history_limit: usize,
    /// Watches from a resourceVersion older than this get `410 Gone`.
    pub compacted: u64,
    pub seed: u64,
    pub counter: u64,
    pub next_service_ip: u32,
    /// How many simulated kubelets run (pods are then deleted gracefully).
    pub kubelets: usize,
}

impl State {
    pub fn new(history_limit: usize, seed: u64) -> State {
        State {
            rv: 0,
            types: BTreeMap::new(),
            objects: BTreeMap::new(),
            uids: HashMap::new(),
            dependents: HashMap::new(),
            history: VecDeque::new(),
            history_limit,
            compacted: 0,
            seed,
            counter: 0,
            next_service_ip: 1,
            kubelets: 0,
        }
    }

    pub fn register(&mut self, ty: Arc<ResourceType>) {
        self.types.insert(
            (ty.group.clone(), ty.version.clone(), ty.plural.clone()),
            ty,
        );
    }

    pub fn find_type(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.types
            .get(&(group.to_owned(), version.to_owned(), plural.to_owned()))
            .cloned()
    }

    /// Any served version of a resource (for garbage collection, which works on storage keys).
    pub fn type_for_storage(&self, resource: &str) -> Option<Arc<ResourceType>> {
        self.types
            .values()
            .find(|t| t.storage_key() == resource)
            .cloned()
    }

    pub fn next_uid(&mut self) -> String {
        self.counter += 1;
        meta::new_uid(self.seed, self.counter)
    }

    pub fn next_suffix(&mut self) -> String {
        self.counter += 1;
        meta::name_suffix(self.seed, self.counter)
    }

    pub fn next_service_ip(&mut self) -> String {
        let n = self.next_service_ip;
        self.next_service_ip += 1;
        format!("10.96.{}.{}", n / 250, n % 250 + 1)
    }

    fn bump(&mut self, obj: &mut Value) -> u64 {
        self.rv += 1;
        meta::meta_mut(obj).insert("resourceVersion".into(), json!(self.rv.to_string()));
        self.rv
    }

    fn record(&mut self, change: Change) {
        self.history.push_back(change);
        while self.history.len() > self.history_limit {
            if let Some(old) = self.history.pop_front() {
                self.compacted = old.rv;
            }
        }
    }

    /// Drops all retained history, so any watch from an earlier resourceVersion gets `410 Gone`.
    pub fn compact(&mut self) {
        self.history.clear();
        self.compacted = self.rv;
    }

    fn index(&mut self, key: &ObjKey, obj: &Value) {
        if let Some(uid) = meta::meta_str(obj, "uid") {
            self.uids.insert(uid.to_owned(), key.clone());
        }
        for r in owner_refs(obj) {
            self.dependents
                .entry(r.uid)
                .or_default()
                .insert(key.clone());
        }
    }

    fn unindex(&mut self, key: &ObjKey, obj: &Value) {
        if let Some(uid) = meta::meta_str(obj, "uid")
            && self.uids.get(uid) == Some(key)
        {
            self.uids.remove(uid);
        }
        for r in owner_refs(obj) {
            if let Some(set) = self.dependents.get_mut(&r.uid) {
                set.remove(key);
                if set.is_empty() {
                    self.dependents.remove(&r.uid);
                }
            }
        }
    }

    fn with_managed_fields(mut obj: Value, managed: &Managed) -> Value {
        let rendered = managed.render();
        let m = meta::meta_mut(&mut obj);
        if rendered.as_array().is_some_and(Vec::is_empty) {
            m.remove("managedFields");
        } else {
            m.insert("managedFields".into(), rendered);
        }
        obj
    }

    /// Stores a new object (ADDED) and returns it as stored.
    pub fn insert(&mut self, key: ObjKey, obj: Value, managed: Managed) -> Value {
        let mut obj = Self::with_managed_fields(obj, &managed);
        let rv = self.bump(&mut obj);
        self.index(&key, &obj);
        let shared = Arc::new(obj.clone());
        self.objects.insert(key.clone(), Stored { obj, managed });
        self.record(Change {
            rv,
            resource: key.resource,
            namespace: key.namespace,
            kind: EventType::Added,
            obj: shared.clone(),
            prev: None,
        });
        Arc::unwrap_or_clone(shared)
    }

    /// Replaces an existing object (MODIFIED) and returns it as stored.
    pub fn replace(&mut self, key: &ObjKey, obj: Value, managed: Managed) -> Value {
        let mut obj = Self::with_managed_fields(obj, &managed);
        let rv = self.bump(&mut obj);
        let prev = self.objects.remove(key);
        if let Some(p) = &prev {
            self.unindex(key, &p.obj);
        }
        self.index(key, &obj);
        let shared = Arc::new(obj.clone());
        self.objects.insert(key.clone(), Stored { obj, managed });
        self.record(Change {
            rv,
            resource: key.resource.clone(),
            namespace: key.namespace.clone(),
            kind: EventType::Modified,
            obj: shared.clone(),
            prev: prev.map(|p| Arc::new(p.obj)),
        });
        Arc::unwrap_or_clone(shared)
    }

    /// Removes an object (DELETED, carrying a new resourceVersion) and returns its last state.
    pub fn remove(&mut self, key: &ObjKey) -> Option<Value> {
        let mut stored = self.objects.remove(key)?;
        self.unindex(key, &stored.obj);
        let rv = self.bump(&mut stored.obj);
        self.record(Change {
            rv,
            resource: key.resource.clone(),
            namespace: key.namespace.clone(),
            kind: EventType::Deleted,
            obj: Arc::new(stored.obj.clone()),
            prev: None,
        });
        Some(stored.obj)
    }

    /// Objects of a resource, optionally in one namespace, in key order starting after `after`.
    pub fn range<'a>(
        &'a self,
        resource: &'a str,
        namespace: Option<&'a str>,
        after: Option<&ObjKey>,
    ) -> impl Iterator<Item = (&'a ObjKey, &'a Stored)> + 'a {
        let start = ObjKey {
            resource: resource.to_owned(),
            namespace: namespace.unwrap_or_default().to_owned(),
            name: String::new(),
        };
        let lower = match after {
            Some(a) if *a >= start => std::ops::Bound::Excluded(a.clone()),
            _ => std::ops::Bound::Included(start),
        };
        self.objects
            .range((lower, std::ops::Bound::Unbounded))
            .take_while(move |(k, _)| {
                k.resource == resource && namespace.is_none_or(|ns| k.namespace == ns)
            })
    }
}
