//! Applications allowed on the bus: their tokens (stored hashed) and grants.
//!
//! Apps and grants come from config (`[[bus.apps]]`, fixed) and from the admin
//! RPC (`bus_app_add`, `bus_grant`, ...; persisted in the sled trees `bus/apps`
//! and `bus/grants`). Nothing is granted by default.

use std::collections::BTreeMap;
use std::sync::RwLock;

use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::audit::Audit;
use crate::store::{decode_value, encode_value, Batch, SledStore, Store};
use crate::{Error, Result};

const APPS: &str = "bus/apps";
const GRANTS: &str = "bus/grants";
const FORMAT: u8 = 1;

/// What an app may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verb {
    /// Publish to topics matching the pattern.
    Publish,
    /// Send to other apps on topics matching the pattern.
    Send,
    /// Subscribe to topics or patterns covered by the pattern.
    Subscribe,
    /// Request `<app>.<action>` matching the pattern.
    Request,
    /// Serve actions matching the pattern.
    Serve,
}

impl Verb {
    /// Parses `publish`, `send`, ...
    pub fn parse(s: &str) -> Result<Self> {
        serde_json::from_value(serde_json::Value::String(s.to_owned())).map_err(|_| {
            Error::Invalid(format!(
                "unknown verb `{s}`; allowed: publish, send, subscribe, request, serve"
            ))
        })
    }

    /// The verb as written in grants and on the wire.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Verb::Publish => "publish",
            Verb::Send => "send",
            Verb::Subscribe => "subscribe",
            Verb::Request => "request",
            Verb::Serve => "serve",
        }
    }
}

/// An app defined in config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// App name.
    pub name: String,
    /// BLAKE3 of its token, hex (`vigilctl bus token-hash TOKEN` prints it).
    pub token_blake3: String,
    /// Grants as `verb:pattern`, e.g. `publish:orders.*`.
    #[serde(default)]
    pub grants: Vec<String>,
}

/// A grant: `verb` on names matching `pattern` (`*`, `prefix.*` or an exact name).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Grant {
    /// The verb.
    pub verb: Verb,
    /// The pattern.
    pub pattern: String,
}

/// What `bus_apps` shows of an app.
#[derive(Debug, Clone, Serialize)]
pub struct AppInfo {
    /// Name.
    pub name: String,
    /// `config` or `rpc`.
    pub source: &'static str,
    /// Its grants, as `verb:pattern`, with where each comes from.
    pub grants: Vec<(String, &'static str)>,
}

#[derive(Debug, Clone)]
struct App {
    token_hash: [u8; 32],
    source: &'static str,
    grants: BTreeMap<Grant, &'static str>,
}

/// Checks a pattern: `*`, `name` or `prefix.*` with names of `A-Z a-z 0-9 . _ -`.
pub fn check_pattern(p: &str) -> Result<()> {
    let body = p.strip_suffix(".*").unwrap_or(p);
    if p == "*" || crate::queue::check_name("pattern", body).is_ok() {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "pattern {p:?} is invalid: use `*`, `name` or `prefix.*` with A-Z a-z 0-9 . _ -"
        )))
    }
}

/// Checks an app name: a topic-style name without dots, since grants name
/// `<app>.<action>` and an app's consumer groups are `<app>` and `<app>.<name>`.
pub fn check_app_name(name: &str) -> Result<()> {
    match crate::queue::check_name("app", name) {
        Ok(()) if !name.contains('.') => Ok(()),
        _ => Err(Error::Invalid(format!(
            "app {name:?} is invalid: use 1 to 200 of A-Z a-z 0-9 _ - (no dots: requests name `<app>.<action>` and consumer groups `<app>.<name>`)"
        ))),
    }
}

/// Whether `group` is one of `app`'s consumer groups: `app` itself or `app.<name>`.
pub fn owns_group(app: &str, group: &str) -> bool {
    group == app || group.strip_prefix(app).is_some_and(|rest| rest.starts_with('.'))
}

/// Whether `pattern` covers `name` (which may itself be a `prefix.*` pattern).
pub fn covers(pattern: &str, name: &str) -> bool {
    if pattern == "*" || pattern == name {
        return true;
    }
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => false,
    }
}

fn hash(token: &str) -> [u8; 32] {
    *blake3::hash(token.as_bytes()).as_bytes()
}

/// Token hash as configured in `[[bus.apps]] token_blake3`.
pub fn token_hash_hex(token: &str) -> String {
    hex::encode(hash(token))
}

fn parse_grant(s: &str) -> Result<Grant> {
    let (verb, pattern) = s.split_once(':').ok_or_else(|| {
        Error::Invalid(format!(
            "grant {s:?} is invalid: write `verb:pattern`, e.g. `publish:orders.*`"
        ))
    })?;
    check_pattern(pattern)?;
    Ok(Grant {
        verb: Verb::parse(verb)?,
        pattern: pattern.to_owned(),
    })
}

/// The app table.
#[derive(Debug)]
pub struct Apps {
    store: SledStore,
    apps: RwLock<BTreeMap<String, App>>,
}

fn grant_key(app: &str, g: &Grant) -> Vec<u8> {
    format!("{app}\0{}\0{}", g.verb.as_str(), g.pattern).into_bytes()
}

impl Apps {
    /// Loads config apps and the persisted ones.
    pub fn open(store: SledStore, config: &[AppConfig]) -> Result<Self> {
        let mut apps = BTreeMap::new();
        for c in config {
            check_app_name(&c.name)?;
            let token_hash = hex::decode(&c.token_blake3)
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "bus.apps `{}`: token_blake3 must be 64 hex characters",
                        c.name
                    ))
                })?;
            let grants = c
                .grants
                .iter()
                .map(|g| parse_grant(g).map(|g| (g, "config")))
                .collect::<Result<_>>()?;
            apps.insert(
                c.name.clone(),
                App {
                    token_hash,
                    source: "config",
                    grants,
                },
            );
        }
        for (k, v) in store.scan_prefix(APPS, b"")? {
            let name = String::from_utf8_lossy(&k).into_owned();
            // Added before app names were checked (dots made `a.b` look
            // like a consumer group of app `a`): never loaded, so its token
            // stops working; the operator adds it again under a valid name.
            if let Err(e) = check_app_name(&name) {
                tracing::error!(app = %name, error = %e, "stored bus app not loaded, so its token no longer works: add it again under a valid name (vigilctl bus app-add)");
                continue;
            }
            let h: [u8; 32] = decode_value(APPS, FORMAT, &v)?
                .try_into()
                .map_err(|_| Error::Corrupt {
                    tree: APPS.into(),
                    why: "token hash is not 32 bytes".into(),
                })?;
            apps.entry(name).or_insert(App {
                token_hash: h,
                source: "rpc",
                grants: BTreeMap::new(),
            });
        }
        for (k, _) in store.scan_prefix(GRANTS, b"")? {
            let text = String::from_utf8_lossy(&k).into_owned();
            let mut parts = text.splitn(3, '\0');
            if let (Some(app), Some(verb), Some(pattern)) = (parts.next(), parts.next(), parts.next()) {
                if let (Some(a), Ok(verb)) = (apps.get_mut(app), Verb::parse(verb)) {
                    a.grants
                        .entry(Grant {
                            verb,
                            pattern: pattern.to_owned(),
                        })
                        .or_insert("rpc");
                }
            }
        }
        Ok(Self {
            store,
            apps: RwLock::new(apps),
        })
    }

    /// Creates an app and returns its token (shown once; only its hash is
    /// kept). Every change below is written with its `audit` entry in one
    /// atomic write, or refused.
    pub fn add(&self, name: &str, who: &str, audit: &Audit) -> Result<String> {
        check_app_name(name)?;
        let mut apps = self.apps.write().unwrap_or_else(|p| p.into_inner());
        if apps.contains_key(name) {
            return Err(Error::Invalid(format!(
                "app `{name}` exists already: remove it first to issue a new token"
            )));
        }
        let mut raw = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut raw);
        let token = hex::encode(raw);
        let h = hash(&token);
        let mut b = Batch::default();
        b.insert(APPS, name.as_bytes(), encode_value(FORMAT, &h));
        audit.commit(b, who, "bus.app_add", serde_json::json!({ "app": name }))?;
        apps.insert(
            name.to_owned(),
            App {
                token_hash: h,
                source: "rpc",
                grants: BTreeMap::new(),
            },
        );
        self.durable(
            &format!("app `{name}` was added (its token is not shown), but"),
            &format!("remove it (vigilctl bus app-remove {name}) and add it again once the disk is fixed"),
        )?;
        Ok(token)
    }

    /// Removes an app added over RPC, with its grants.
    pub fn remove(&self, name: &str, who: &str, audit: &Audit) -> Result<()> {
        let mut apps = self.apps.write().unwrap_or_else(|p| p.into_inner());
        let mut b = Batch::default();
        match apps.get(name) {
            None => return Err(Error::Invalid(format!("no app `{name}`"))),
            Some(a) if a.source == "config" => {
                return Err(Error::Invalid(format!(
                    "app `{name}` is defined in config: remove it there"
                )))
            }
            Some(a) => {
                for g in a.grants.keys() {
                    b.remove(GRANTS, &grant_key(name, g));
                }
            }
        }
        b.remove(APPS, name.as_bytes());
        audit.commit(b, who, "bus.app_remove", serde_json::json!({ "app": name }))?;
        apps.remove(name);
        self.durable(
            &format!("app `{name}` was removed and its sessions closed, but"),
            "once the disk is fixed, check `vigilctl bus apps` after a restart",
        )
    }

    /// Flushes a change already made (on disk and in memory, with its audit
    /// entry); a failure says it is in effect but may not survive a restart.
    fn durable(&self, done: &str, then: &str) -> Result<()> {
        self.store.flush().map(drop).map_err(|e| {
            Error::ChangeNotDurable(format!(
                "{done} the store could not make it durable ({e}), so a restart may undo it: {then}"
            ))
        })
    }

    /// Whether `token` is `app`'s (constant-time comparison of hashes).
    pub fn authenticate(&self, app: &str, token: &str) -> bool {
        let apps = self.apps.read().unwrap_or_else(|p| p.into_inner());
        let given = hash(token);
        apps.get(app).is_some_and(|a| {
            a.token_hash
                .iter()
                .zip(given)
                .fold(0u8, |acc, (x, y)| acc | (x ^ y))
                == 0
        })
    }

    /// Grants `verb` on `pattern` to `app`; false when it already had it.
    pub fn grant(&self, app: &str, verb: Verb, pattern: &str, who: &str, audit: &Audit) -> Result<bool> {
        check_pattern(pattern)?;
        let mut apps = self.apps.write().unwrap_or_else(|p| p.into_inner());
        let a = apps
            .get_mut(app)
            .ok_or_else(|| Error::Invalid(format!("no app `{app}`: add it with bus_app_add first")))?;
        let g = Grant {
            verb,
            pattern: pattern.to_owned(),
        };
        let new = !a.grants.contains_key(&g);
        let mut b = Batch::default();
        if new {
            b.insert(GRANTS, &grant_key(app, &g), vec![]);
        }
        let detail = serde_json::json!({ "app": app, "verb": verb, "pattern": pattern, "new": new });
        audit.commit(b, who, "bus.grant", detail)?;
        if !new {
            return Ok(false);
        }
        a.grants.insert(g, "rpc");
        self.durable(
            &format!("the grant to `{app}` is in effect, but"),
            "once the disk is fixed, check `vigilctl bus apps` after a restart",
        )?;
        Ok(true)
    }

    /// Revokes a grant made over RPC.
    pub fn revoke(&self, app: &str, verb: Verb, pattern: &str, who: &str, audit: &Audit) -> Result<()> {
        let mut apps = self.apps.write().unwrap_or_else(|p| p.into_inner());
        let a = apps
            .get_mut(app)
            .ok_or_else(|| Error::Invalid(format!("no app `{app}`")))?;
        let g = Grant {
            verb,
            pattern: pattern.to_owned(),
        };
        match a.grants.get(&g) {
            None => Err(Error::Invalid(format!(
                "app `{app}` has no grant {}:{pattern}",
                verb.as_str()
            ))),
            Some(&"config") => Err(Error::Invalid(format!(
                "grant {}:{pattern} of `{app}` is in config: remove it there",
                verb.as_str()
            ))),
            Some(_) => {
                let mut b = Batch::default();
                b.remove(GRANTS, &grant_key(app, &g));
                let detail = serde_json::json!({ "app": app, "verb": verb, "pattern": pattern });
                audit.commit(b, who, "bus.revoke", detail)?;
                a.grants.remove(&g);
                self.durable(
                    &format!("the grant of `{app}` is revoked (what it allowed ends now), but"),
                    "once the disk is fixed, check `vigilctl bus apps` after a restart",
                )
            }
        }
    }

    /// Whether `app` may `verb` on `name` (a topic, a pattern, an action or `app.action`).
    /// A dead-letter topic (`<topic>.dlq`) is covered only by a grant that
    /// names it exactly: `orders.*` or `*` must not hand an app the messages
    /// another group gave up on, or let it write into what
    /// `queue_dlq_replay` moves back.
    pub fn allowed(&self, app: &str, verb: Verb, name: &str) -> bool {
        let apps = self.apps.read().unwrap_or_else(|p| p.into_inner());
        let dead_letters = name.ends_with(".dlq");
        apps.get(app).is_some_and(|a| {
            a.grants.keys().any(|g| {
                g.verb == verb
                    && if dead_letters {
                        g.pattern == name
                    } else {
                        covers(&g.pattern, name)
                    }
            })
        })
    }

    /// Every app with its grants.
    pub fn list(&self) -> Vec<AppInfo> {
        let apps = self.apps.read().unwrap_or_else(|p| p.into_inner());
        apps.iter()
            .map(|(name, a)| AppInfo {
                name: name.clone(),
                source: a.source,
                grants: a
                    .grants
                    .iter()
                    .map(|(g, src)| (format!("{}:{}", g.verb.as_str(), g.pattern), *src))
                    .collect(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_allowed_until_granted_and_grants_persist() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 1 << 20, None).unwrap();
        let audit = Audit::open(store.clone()).unwrap();
        let apps = Apps::open(store.clone(), &[]).unwrap();
        let token = apps.add("shop", "rpc", &audit).unwrap();
        assert!(apps.authenticate("shop", &token));
        assert!(!apps.authenticate("shop", "guess"));
        assert!(!apps.authenticate("nobody", &token));
        assert!(!apps.allowed("shop", Verb::Publish, "orders.new"));
        assert!(apps
            .grant("shop", Verb::Publish, "orders.*", "rpc", &audit)
            .unwrap());
        assert!(!apps
            .grant("shop", Verb::Publish, "orders.*", "rpc", &audit)
            .unwrap());
        assert!(apps.allowed("shop", Verb::Publish, "orders.new"));
        assert!(
            apps.allowed("shop", Verb::Publish, "orders.eu.*"),
            "a narrower pattern is covered"
        );
        assert!(!apps.allowed("shop", Verb::Publish, "ordersx"));
        assert!(!apps.allowed("shop", Verb::Subscribe, "orders.new"), "per verb");
        // Dead letters need a grant that names them.
        assert!(apps.grant("shop", Verb::Subscribe, "*", "rpc", &audit).unwrap());
        assert!(apps.allowed("shop", Verb::Subscribe, "orders.new"));
        assert!(!apps.allowed("shop", Verb::Subscribe, "orders.dlq"), "not by `*`");
        assert!(
            !apps.allowed("shop", Verb::Publish, "orders.dlq"),
            "not by `orders.*`"
        );
        assert!(apps
            .grant("shop", Verb::Subscribe, "orders.dlq", "rpc", &audit)
            .unwrap());
        assert!(apps.allowed("shop", Verb::Subscribe, "orders.dlq"));
        assert!(!apps.allowed("shop", Verb::Subscribe, "billing.dlq"));
        drop(apps);
        let apps = Apps::open(store, &[]).unwrap();
        assert!(apps.authenticate("shop", &token));
        assert!(apps.allowed("shop", Verb::Publish, "orders.new"));
        apps.revoke("shop", Verb::Publish, "orders.*", "rpc", &audit)
            .unwrap();
        assert!(!apps.allowed("shop", Verb::Publish, "orders.new"));
        assert!(apps
            .grant("shop", Verb::Publish, "bad pattern", "rpc", &audit)
            .is_err());
    }

    #[test]
    fn a_stored_app_name_with_a_dot_is_not_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 1 << 20, None).unwrap();
        let audit = Audit::open(store.clone()).unwrap();
        let apps = Apps::open(store.clone(), &[]).unwrap();
        let token = apps.add("shop", "rpc", &audit).unwrap();
        // As an older node could have stored it: `shop.admin` would pass
        // for a consumer group of `shop`.
        store
            .insert(APPS, b"shop.admin", &encode_value(FORMAT, &hash(&token)))
            .unwrap();
        drop(apps);
        let apps = Apps::open(store, &[]).unwrap();
        assert!(apps.authenticate("shop", &token));
        assert!(!apps.authenticate("shop.admin", &token), "never loaded");
        assert!(apps.list().iter().all(|a| a.name != "shop.admin"));
    }

    #[test]
    fn config_apps_and_grants_are_fixed() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 1 << 20, None).unwrap();
        let audit = Audit::open(store.clone()).unwrap();
        let cfg = AppConfig {
            name: "cfg".into(),
            token_blake3: token_hash_hex("t0k"),
            grants: vec!["subscribe:*".into()],
        };
        let apps = Apps::open(store, &[cfg]).unwrap();
        assert!(apps.authenticate("cfg", "t0k"));
        assert!(apps.allowed("cfg", Verb::Subscribe, "anything"));
        assert!(apps
            .revoke("cfg", Verb::Subscribe, "*", "rpc", &audit)
            .unwrap_err()
            .to_string()
            .contains("in config"));
        assert!(apps
            .remove("cfg", "rpc", &audit)
            .unwrap_err()
            .to_string()
            .contains("in config"));
    }

    #[test]
    fn a_change_the_audit_log_cannot_record_is_refused_and_not_made() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 1 << 20, None).unwrap();
        let audit = Audit::open(store.clone()).unwrap();
        let apps = Apps::open(store.clone(), &[]).unwrap();
        apps.add("shop", "rpc", &audit).unwrap();
        assert!(apps
            .grant("shop", Verb::Publish, "orders.*", "rpc", &audit)
            .unwrap());
        let actions =
            |a: &Audit| -> Vec<String> { a.list(0, 100).unwrap().into_iter().map(|e| e.action).collect() };
        assert_eq!(actions(&audit), ["bus.app_add", "bus.grant"]);

        store.fail_writes_after(0);
        let refused = |r: Result<()>| {
            let e = r.unwrap_err().to_string();
            assert!(
                e.contains("cannot write the audit log") && e.contains("injected"),
                "{e}"
            );
        };
        refused(apps.add("billing", "rpc", &audit).map(drop));
        refused(
            apps.grant("shop", Verb::Subscribe, "orders.*", "rpc", &audit)
                .map(drop),
        );
        refused(apps.revoke("shop", Verb::Publish, "orders.*", "rpc", &audit));
        refused(apps.remove("shop", "rpc", &audit));
        // Nothing changed, in memory or on disk.
        for apps in [apps, Apps::open(store.clone(), &[]).unwrap()] {
            assert!(apps.list().iter().all(|a| a.name != "billing"));
            assert!(
                apps.allowed("shop", Verb::Publish, "orders.new"),
                "not revoked, not removed"
            );
            assert!(
                !apps.allowed("shop", Verb::Subscribe, "orders.new"),
                "not granted"
            );
        }
        assert_eq!(
            actions(&Audit::open(store.clone()).unwrap()),
            ["bus.app_add", "bus.grant"]
        );
        // The store heals: the same change goes through, with its entry.
        store.fail_writes_after(-1);
        let apps = Apps::open(store, &[]).unwrap();
        assert!(apps
            .grant("shop", Verb::Subscribe, "orders.*", "rpc", &audit)
            .unwrap());
        assert_eq!(actions(&audit).last().map(String::as_str), Some("bus.grant"));
    }
}
