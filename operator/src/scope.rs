//! The operator's scope: the namespaces whose MediaApps and StreamAuths it serves (the fleet's
//! own plus `--watch-namespaces`), and one watch over all of them for each watch cache.
//!
//! The operator holds only namespaced RBAC, so it runs one watch per namespace. A reflector
//! cache takes one stream, and a relist (`Init` ... `InitDone`) replaces the whole cache, so
//! merged streams must not pass one namespace's relist on as such: [`Merge`] turns the first
//! lists of all namespaces into one initial list, and a later relist of one namespace into
//! `Apply` and `Delete` events for that namespace alone.

use std::collections::{BTreeSet, HashMap};

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use kube::api::Api;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};

/// Merges the tagged watch events of several namespaces into what one watcher over all of them
/// would give a reflector. Pure apart from reading the cache the output is written to (for
/// what a relist no longer holds).
pub struct Merge<K: Resource<DynamicType = ()> + Clone + 'static> {
    /// Namespaces whose first list is not complete; while any is, nothing is passed on.
    waiting: BTreeSet<String>,
    /// The initial list of all namespaces, built until every one has listed.
    initial: HashMap<ObjectRef<K>, K>,
    /// A namespace relisting: what it listed so far.
    listing: HashMap<String, HashMap<ObjectRef<K>, K>>,
    /// The cache the merged events are written to.
    cache: Store<K>,
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> Merge<K> {
    pub fn new(namespaces: &[String], cache: Store<K>) -> Merge<K> {
        Merge {
            waiting: namespaces.iter().cloned().collect(),
            initial: HashMap::new(),
            listing: HashMap::new(),
            cache,
        }
    }

    /// The merged events for one event of namespace `ns`.
    pub fn step(&mut self, ns: &str, event: watcher::Event<K>) -> Vec<watcher::Event<K>> {
        use watcher::Event;
        match event {
            Event::Init => {
                self.listing.insert(ns.to_string(), HashMap::new());
                Vec::new()
            }
            Event::InitApply(o) => {
                self.listing
                    .entry(ns.to_string())
                    .or_default()
                    .insert(ObjectRef::from_obj(&o), o);
                Vec::new()
            }
            Event::InitDone => {
                let listed = self.listing.remove(ns).unwrap_or_default();
                self.listed(ns, listed)
            }
            Event::Apply(o) if !self.waiting.is_empty() => {
                self.initial.insert(ObjectRef::from_obj(&o), o);
                Vec::new()
            }
            Event::Delete(o) if !self.waiting.is_empty() => {
                self.initial.remove(&ObjectRef::from_obj(&o));
                Vec::new()
            }
            e @ (Event::Apply(_) | Event::Delete(_)) => vec![e],
        }
    }

    /// Namespace `ns` listed `listed` (its complete contents).
    fn listed(&mut self, ns: &str, listed: HashMap<ObjectRef<K>, K>) -> Vec<watcher::Event<K>> {
        use watcher::Event;
        if !self.waiting.is_empty() {
            self.initial.retain(|r, _| r.namespace.as_deref() != Some(ns));
            self.initial.extend(listed);
            self.waiting.remove(ns);
            if !self.waiting.is_empty() {
                return Vec::new();
            }
            let mut out = vec![Event::Init];
            out.extend(self.initial.drain().map(|(_, o)| Event::InitApply(o)));
            out.push(Event::InitDone);
            return out;
        }
        let gone = self
            .cache
            .state()
            .into_iter()
            .filter(|o| o.namespace().as_deref() == Some(ns) && !listed.contains_key(&ObjectRef::from_obj(o.as_ref())))
            .map(|o| Event::Delete((*o).clone()))
            .collect::<Vec<_>>();
        let mut out: Vec<Event<K>> = listed.into_values().map(Event::Apply).collect();
        out.extend(gone);
        out
    }
}

/// One watch per namespace, as a list of streams (each with the default backoff).
pub fn watches<K>(
    client: &Client,
    namespaces: &[String],
    config: &watcher::Config,
) -> Vec<BoxStream<'static, Result<watcher::Event<K>, watcher::Error>>>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
{
    namespaces
        .iter()
        .map(|ns| {
            watcher(Api::<K>::namespaced(client.clone(), ns), config.clone())
                .default_backoff()
                .boxed()
        })
        .collect()
}

/// The objects touched in any of the namespaces (creations, changes, deletions), for triggers.
pub fn touched<K>(
    client: &Client,
    namespaces: &[String],
    config: &watcher::Config,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
{
    futures::stream::select_all(
        watches::<K>(client, namespaces, config)
            .into_iter()
            .map(|w| w.touched_objects().boxed()),
    )
}

/// One watch over all the namespaces, merged for the reflector cache behind `cache` (see
/// [`Merge`]); reflect the result into that cache's writer.
pub fn merged<K>(
    client: &Client,
    namespaces: &[String],
    config: &watcher::Config,
    cache: Store<K>,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let tagged = namespaces
        .iter()
        .zip(watches::<K>(client, namespaces, config))
        .map(|(ns, w)| {
            let ns = ns.clone();
            w.map(move |e| e.map(|e| (ns.clone(), e))).boxed()
        });
    let mut merge = Merge::new(namespaces, cache);
    futures::stream::select_all(tagged).flat_map(move |e| {
        let out: Vec<Result<watcher::Event<K>, watcher::Error>> = match e {
            Ok((ns, event)) => merge.step(&ns, event).into_iter().map(Ok).collect(),
            Err(e) => vec![Err(e)],
        };
        futures::stream::iter(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Secret;
    use kube::runtime::reflector;
    use watcher::Event;

    fn secret(ns: &str, name: &str, version: &str) -> Secret {
        let mut s = Secret::default();
        s.metadata.namespace = Some(ns.into());
        s.metadata.name = Some(name.into());
        s.metadata.resource_version = Some(version.into());
        s
    }

    /// Feeds `events` (namespace, event) through a Merge into a cache; returns the cache's
    /// contents as `ns/name@version`, sorted, and whether it is ready.
    struct Fixture {
        merge: Merge<Secret>,
        writer: reflector::store::Writer<Secret>,
        store: Store<Secret>,
    }

    impl Fixture {
        fn new(namespaces: &[&str]) -> Fixture {
            let (store, writer) = reflector::store::<Secret>();
            let namespaces: Vec<String> = namespaces.iter().map(|s| s.to_string()).collect();
            Fixture {
                merge: Merge::new(&namespaces, store.clone()),
                writer,
                store,
            }
        }

        fn feed(&mut self, ns: &str, event: Event<Secret>) {
            for e in self.merge.step(ns, event) {
                self.writer.apply_watcher_event(&e);
            }
        }

        fn list(&mut self, ns: &str, objects: &[(&str, &str)]) {
            self.feed(ns, Event::Init);
            for (name, v) in objects {
                self.feed(ns, Event::InitApply(secret(ns, name, v)));
            }
            self.feed(ns, Event::InitDone);
        }

        fn contents(&self) -> Vec<String> {
            let mut v: Vec<String> = self
                .store
                .state()
                .iter()
                .map(|s| {
                    format!(
                        "{}/{}@{}",
                        s.namespace().unwrap(),
                        s.name_any(),
                        s.resource_version().unwrap()
                    )
                })
                .collect();
            v.sort();
            v
        }

        fn ready(&self) -> bool {
            futures::FutureExt::now_or_never(self.store.wait_until_ready()).is_some()
        }
    }

    #[test]
    fn the_cache_is_ready_only_once_every_namespace_has_listed() {
        let mut f = Fixture::new(&["fleet", "team-a"]);
        f.list("fleet", &[("keys", "1")]);
        assert!(!f.ready(), "team-a has not listed yet");
        // Changes before the initial list is complete are part of it.
        f.feed("fleet", Event::Apply(secret("fleet", "tls", "2")));
        f.feed("fleet", Event::Delete(secret("fleet", "keys", "1")));
        assert!(f.contents().is_empty());
        f.list("team-a", &[("keys", "3")]);
        assert!(f.ready());
        assert_eq!(f.contents(), ["fleet/tls@2", "team-a/keys@3"]);
    }

    #[test]
    fn a_relist_of_one_namespace_leaves_the_others_alone() {
        let mut f = Fixture::new(&["fleet", "team-a"]);
        f.list("fleet", &[("keys", "1"), ("tls", "1")]);
        f.list("team-a", &[("keys", "1")]);
        // team-a's watch restarts: its relist updates and deletes only team-a's objects.
        f.feed("team-a", Event::Init);
        f.feed("team-a", Event::InitApply(secret("team-a", "new", "5")));
        assert_eq!(
            f.contents(),
            ["fleet/keys@1", "fleet/tls@1", "team-a/keys@1"],
            "nothing changes until the relist is complete"
        );
        f.feed("team-a", Event::InitDone);
        assert_eq!(f.contents(), ["fleet/keys@1", "fleet/tls@1", "team-a/new@5"]);
        // Ordinary changes pass through.
        f.feed("fleet", Event::Apply(secret("fleet", "keys", "6")));
        f.feed("fleet", Event::Delete(secret("fleet", "tls", "1")));
        assert_eq!(f.contents(), ["fleet/keys@6", "team-a/new@5"]);
    }

    #[test]
    fn one_namespace_behaves_as_a_plain_watch() {
        let mut f = Fixture::new(&["fleet"]);
        f.list("fleet", &[("a", "1"), ("b", "1")]);
        assert!(f.ready());
        f.list("fleet", &[("b", "2")]);
        assert_eq!(f.contents(), ["fleet/b@2"]);
    }
}
