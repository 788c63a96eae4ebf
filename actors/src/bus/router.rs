//! The topic table: exact topics and `prefix.*` patterns to live sinks.
//! Routing a topic costs one lookup per `.`-separated prefix of its name plus
//! its subscribers, whatever the total number of subscriptions.

use std::collections::HashMap;

use tokio::sync::mpsc;

/// Where a live subscription's messages go.
#[derive(Debug, Clone)]
pub(crate) struct Sink {
    pub(crate) app: String,
    pub(crate) session: u64,
    pub(crate) sub: u64,
    pub(crate) tx: mpsc::Sender<String>,
}

#[derive(Debug, Default)]
pub(crate) struct Router {
    exact: HashMap<String, Vec<Sink>>,
    prefix: HashMap<String, Vec<Sink>>,
    by_session: HashMap<u64, Vec<(bool, String, u64)>>,
}

impl Router {
    /// Adds a subscription to a topic, or to a pattern ending in `*`.
    pub(crate) fn add(&mut self, topic_or_pattern: &str, sink: Sink) {
        let (is_prefix, key) = match topic_or_pattern.strip_suffix('*') {
            Some(p) => (true, p.to_owned()),
            None => (false, topic_or_pattern.to_owned()),
        };
        self.by_session
            .entry(sink.session)
            .or_default()
            .push((is_prefix, key.clone(), sink.sub));
        let map = if is_prefix {
            &mut self.prefix
        } else {
            &mut self.exact
        };
        map.entry(key).or_default().push(sink);
    }

    fn drop_sink(&mut self, is_prefix: bool, key: &str, session: u64, sub: u64) {
        let map = if is_prefix {
            &mut self.prefix
        } else {
            &mut self.exact
        };
        if let Some(v) = map.get_mut(key) {
            v.retain(|s| !(s.session == session && s.sub == sub));
            if v.is_empty() {
                map.remove(key);
            }
        }
    }

    /// Removes one subscription.
    pub(crate) fn remove(&mut self, session: u64, sub: u64) {
        let Some(list) = self.by_session.get_mut(&session) else {
            return;
        };
        let gone: Vec<_> = list.iter().filter(|e| e.2 == sub).cloned().collect();
        list.retain(|e| e.2 != sub);
        for (p, k, s) in gone {
            self.drop_sink(p, &k, session, s);
        }
    }

    /// Removes every subscription of a session at once.
    pub(crate) fn remove_session(&mut self, session: u64) {
        for (p, k, s) in self.by_session.remove(&session).unwrap_or_default() {
            self.drop_sink(p, &k, session, s);
        }
    }

    /// The sinks of `topic`: exact subscribers, then every matching pattern.
    /// A dead-letter topic (`.dlq`) reaches exact subscribers only: reading
    /// dead letters needs a grant naming that topic, never a pattern.
    pub(crate) fn route(&self, topic: &str) -> Vec<Sink> {
        let mut out: Vec<Sink> = self.exact.get(topic).cloned().unwrap_or_default();
        if topic.ends_with(".dlq") {
            return out;
        }
        if let Some(all) = self.prefix.get("") {
            out.extend(all.iter().cloned());
        }
        for (i, _) in topic.match_indices('.') {
            if let Some(v) = self.prefix.get(&topic[..=i]) {
                out.extend(v.iter().cloned());
            }
        }
        out
    }

    /// (topic or pattern, live subscribers), sorted.
    pub(crate) fn table(&self) -> Vec<(String, usize)> {
        let mut v: Vec<(String, usize)> = self
            .exact
            .iter()
            .map(|(k, s)| (k.clone(), s.len()))
            .chain(self.prefix.iter().map(|(k, s)| (format!("{k}*"), s.len())))
            .collect();
        v.sort();
        v
    }

    /// Live subscriptions in the table.
    pub(crate) fn len(&self) -> usize {
        self.exact
            .values()
            .chain(self.prefix.values())
            .map(Vec::len)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink(session: u64, sub: u64) -> Sink {
        Sink {
            app: "a".into(),
            session,
            sub,
            tx: mpsc::channel(1).0,
        }
    }

    #[test]
    fn exact_and_prefix_routes_and_session_cleanup() {
        let mut r = Router::default();
        r.add("orders.new", sink(1, 1));
        r.add("orders.*", sink(1, 2));
        r.add("*", sink(2, 1));
        r.add("other", sink(2, 2));
        let subs = |r: &Router, t: &str| r.route(t).iter().map(|s| (s.session, s.sub)).collect::<Vec<_>>();
        assert_eq!(subs(&r, "orders.new"), [(1, 1), (2, 1), (1, 2)]);
        assert_eq!(subs(&r, "orders.eu.x"), [(2, 1), (1, 2)]);
        assert_eq!(subs(&r, "ordersx"), [(2, 1)]);
        r.remove(1, 2);
        assert_eq!(subs(&r, "orders.eu.x"), [(2, 1)]);
        r.remove_session(1);
        r.remove_session(2);
        assert_eq!(r.len(), 0);
        assert!(r.table().is_empty());
    }

    #[test]
    fn dead_letter_topics_reach_exact_subscribers_only() {
        let mut r = Router::default();
        r.add("orders.*", sink(1, 1));
        r.add("*", sink(1, 2));
        r.add("orders.dlq", sink(2, 1));
        let subs = |t: &str| r.route(t).iter().map(|s| (s.session, s.sub)).collect::<Vec<_>>();
        assert_eq!(subs("orders.dlq"), [(2, 1)], "no pattern covers dead letters");
        assert_eq!(subs("orders.new"), [(1, 2), (1, 1)]);
    }
}
