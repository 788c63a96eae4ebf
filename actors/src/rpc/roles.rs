//! Who may call what: every admin RPC method and the least role it needs,
//! in one table. The server refuses a call whose caller's role is below it,
//! and `docs/rpc.md` is tested against it (`role` column) so neither drifts.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What a credential may do; each role includes the ones below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Sees status: reads that change nothing.
    Read,
    /// Changes state in the running node: pause/resume, bus apps and
    /// grants, queue replays, dataset ingest and removal, challenges,
    /// dials, channel payments, actor restarts.
    Operator,
    /// Manages access and the node itself: API keys, bans, the audit log,
    /// shutdown, fault injection.
    Admin,
}

impl Role {
    /// Every role, lowest first.
    pub const ALL: [Role; 3] = [Role::Read, Role::Operator, Role::Admin];

    /// The role's name as configured and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role `{s}`: use read, operator or admin"))
    }
}

use Role::{Admin, Operator, Read};

/// Every method the admin RPC serves, with the least role that may call it.
pub const METHOD_ROLES: [(&str, Role); 64] = [
    ("rpc.discover", Read),
    ("node_info", Read),
    ("node_health", Read),
    ("node_shutdown", Admin),
    ("actors_tree", Read),
    ("actors_restart", Operator),
    ("actors_inject_panic", Admin),
    ("actors_dead_letters", Read),
    ("bus_topics", Read),
    ("bus_apps", Read),
    ("bus_app_add", Operator),
    ("bus_app_remove", Operator),
    ("bus_grant", Operator),
    ("bus_revoke", Operator),
    ("queue_stats", Read),
    ("queue_dlq", Read),
    ("queue_dlq_replay", Operator),
    ("audit_list", Admin),
    ("audit_verify", Read),
    ("keys_add", Admin),
    ("keys_list", Admin),
    ("keys_revoke", Admin),
    ("net_info", Read),
    ("net_peers", Read),
    ("net_bans", Read),
    ("net_ban", Admin),
    ("net_unban", Admin),
    ("net_dial", Operator),
    ("net_probe", Operator),
    ("net_probes", Read),
    ("net_gossip_seen", Read),
    ("epoch_head", Read),
    ("epoch_get", Read),
    ("vdf_status", Read),
    ("storage_put_begin", Operator),
    ("storage_put_chunk", Operator),
    ("storage_put_finish", Operator),
    ("storage_put_abort", Operator),
    ("storage_job", Read),
    ("storage_jobs", Read),
    ("storage_list", Read),
    ("storage_announced", Read),
    ("storage_get", Read),
    ("storage_remove", Operator),
    ("challenge_run", Operator),
    ("challenge_audit", Operator),
    ("challenge_stats", Read),
    ("challenge_attestations", Read),
    ("continuity_status", Read),
    ("continuity_proof", Read),
    ("continuity_roots", Read),
    ("continuity_check", Operator),
    ("chain_status", Read),
    ("chain_alerts", Read),
    ("security_rules", Read),
    ("security_pause", Operator),
    ("security_resume", Operator),
    ("layer2_status", Read),
    ("layer2_open", Operator),
    ("layer2_pay", Operator),
    ("layer2_close", Operator),
    ("layer2_dispute", Operator),
    ("layer2_channels", Read),
    ("layer2_channel", Read),
];

/// The least role `method` needs; a name not in the table needs admin (a
/// method added without a row is never open by accident).
pub fn role_of(method: &str) -> Role {
    METHOD_ROLES
        .iter()
        .find(|(name, _)| *name == method)
        .map(|(_, role)| *role)
        .unwrap_or(Admin)
}

/// The table's name for `method` (for metric labels: unknown names share
/// `unknown`, so a caller cannot blow up cardinality).
pub fn known(method: &str) -> &'static str {
    METHOD_ROLES
        .iter()
        .find(|(name, _)| *name == method)
        .map(|(name, _)| *name)
        .unwrap_or("unknown")
}

/// Every method name in the table.
pub fn methods() -> impl Iterator<Item = &'static str> {
    METHOD_ROLES.iter().map(|(n, _)| *n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_and_parse_back() {
        assert!(Read < Operator && Operator < Admin);
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), r);
        }
        let e = "root".parse::<Role>().unwrap_err();
        assert!(
            e.contains("`root`") && e.contains("read, operator or admin"),
            "{e}"
        );
    }

    #[test]
    fn the_table_names_each_method_once_and_unknown_ones_need_admin() {
        let mut names: Vec<_> = methods().collect();
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n, "a method is listed twice");
        assert_eq!(role_of("node_info"), Read);
        assert_eq!(role_of("no_such_method"), Admin);
        assert_eq!(known("no_such_method"), "unknown");
        assert_eq!(known(""), "unknown");
    }
}
