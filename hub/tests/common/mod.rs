//! Shared by the hub's integration tests: the storage suite (run against SQLite and
//! PostgreSQL by `store_sqlite.rs` and `store_postgres.rs`), and small builders.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod postgres;
pub mod tls;

use std::collections::BTreeMap;

use cairn_hub::store::{
    self, HostStatus, NewToken, ProjectRef, Published, Registration, Scope, Target, TokenState,
};
use cairn_hub::{SqlStore, Store, StoreError};
use cairn_proto::protocol::Inventory;
use cairn_proto::{Event, EventKind, Profile};

/// Run `$body` (an async fn taking a fresh `SqlStore`) as one `#[tokio::test]` per suite case.
#[macro_export]
macro_rules! storage_suite {
    ($fresh:path) => {
        $crate::storage_suite!(@case $fresh,
            tokens_expire_are_revoked_and_run_out,
            concurrent_registrations_never_exceed_max_uses,
            duplicate_host_name_is_refused_without_spending_a_use,
            a_registration_retried_with_its_key_returns_the_same_identity,
            concurrent_retries_of_one_registration_make_one_host,
            credentials_authenticate_only_their_own_host,
            profile_scopes_are_visible_where_they_belong,
            profiles_are_immutable_and_versions_monotonic,
            assignment_by_host_and_by_tag,
            events_are_idempotent_by_seq_and_drive_status,
            heartbeat_records_inventory_and_last_seen,
            removing_a_host_revokes_it_and_drops_its_events,
            tenants_and_projects_are_named_uniquely,
            fleet_view_resolves_assignments_like_the_profile_endpoint,
            registries_are_scoped_and_addon_profiles_composed);
    };
    (@case $fresh:path, $($name:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (store, _guard) = $fresh().await;
                common::$name(&store).await;
                store.close().await;
            }
        )*
    };
}

pub fn default_project() -> ProjectRef {
    ProjectRef::new("default", "default")
}

pub fn inventory(cores: u32) -> Inventory {
    let mut inv = Inventory::default();
    inv.cpu.cores = cores;
    inv.cpu.model = "Test CPU".into();
    inv.memory_bytes = 8 << 30;
    inv.arch = "amd64".into();
    inv.agent_version = "0.1.0".into();
    inv.os.id = "debian".into();
    inv.os.version = "12".into();
    inv
}

pub async fn token(store: &SqlStore, project: &ProjectRef, max_uses: Option<u32>) -> String {
    named_token(store, project, "test", max_uses).await
}

pub async fn named_token(
    store: &SqlStore,
    project: &ProjectRef,
    name: &str,
    max_uses: Option<u32>,
) -> String {
    store
        .create_token(&NewToken {
            project: project.clone(),
            name: name.into(),
            expires_at: None,
            max_uses,
        })
        .await
        .unwrap()
        .token
}

pub fn registration(token: &str, name: &str, tags: &[(&str, &str)]) -> Registration {
    Registration {
        token: token.into(),
        name: name.into(),
        tags: tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        inventory: inventory(4),
        registration_key: None,
    }
}

/// A registration carrying a registration key, as agents send it.
pub fn keyed_registration(token: &str, name: &str, key: &str) -> Registration {
    Registration {
        registration_key: Some(key.into()),
        ..registration(token, name, &[])
    }
}

/// A fresh registration key (`cairn_rk_` and 256 random bits, like the agent's).
pub fn registration_key() -> String {
    cairn_hub::secret::new_secret("cairn_rk_").unwrap()
}

pub fn profile(name: &str, version: u64, motd: &str) -> Profile {
    serde_json::from_value(serde_json::json!({
        "name": name,
        "version": version,
        "layers": [{"os": {"user_data": format!("stages:\n  boot:\n    - files:\n        - path: /etc/motd\n          content: {motd}\n")}}]
    }))
    .unwrap()
}

pub fn event(seq: u64, kind: EventKind, stage: &str, step: &str, message: &str) -> Event {
    Event {
        seq,
        time: format!("2026-11-24T12:00:{:02}Z", seq % 60),
        host: "ignored-by-the-hub".into(),
        kind,
        stage: stage.into(),
        step: step.into(),
        source: if step.is_empty() {
            String::new()
        } else {
            format!("user-data.yaml:{}", seq)
        },
        message: message.into(),
        data: serde_json::Value::Null,
    }
}

// --------------------------------------------------------------------------------------
// The suite

pub async fn tokens_expire_are_revoked_and_run_out(store: &SqlStore) {
    let p = default_project();
    // Max uses: two hosts, then refused.
    let limited = named_token(store, &p, "limited", Some(2)).await;
    store
        .register_host(&registration(&limited, "a1", &[]))
        .await
        .unwrap();
    store
        .register_host(&registration(&limited, "a2", &[]))
        .await
        .unwrap();
    let err = store
        .register_host(&registration(&limited, "a3", &[]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::TokenRejected(m) if m.contains("used 2 of 2")),
        "{err}"
    );

    // Expired.
    let expired = store
        .create_token(&NewToken {
            project: p.clone(),
            name: "old".into(),
            expires_at: Some(store::now() - 1),
            max_uses: None,
        })
        .await
        .unwrap();
    assert_eq!(expired.info.state, TokenState::Expired);
    let err = store
        .register_host(&registration(&expired.token, "b1", &[]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::TokenRejected(m) if m.contains("expired")),
        "{err}"
    );

    // A token still valid for a while works.
    let fresh = store
        .create_token(&NewToken {
            project: p.clone(),
            name: "new".into(),
            expires_at: Some(store::now() + 3600),
            max_uses: None,
        })
        .await
        .unwrap();
    store
        .register_host(&registration(&fresh.token, "c1", &[]))
        .await
        .unwrap();

    // Revoked: refused from then on, hosts registered before keep working.
    let revoked = named_token(store, &p, "revoked", None).await;
    let before = store
        .register_host(&registration(&revoked, "d1", &[]))
        .await
        .unwrap();
    let id = store
        .list_tokens(Some(&p))
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.name == "revoked")
        .unwrap()
        .id;
    let info = store.revoke_token(&id).await.unwrap();
    assert_eq!(info.state, TokenState::Revoked);
    let err = store
        .register_host(&registration(&revoked, "d2", &[]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::TokenRejected(m) if m.contains("revoked")),
        "{err}"
    );
    store
        .authenticate_host(&before.host.id, &before.credential)
        .await
        .unwrap();

    // Unknown secret.
    let err = store
        .register_host(&registration("cairn_rt_not-a-token", "e1", &[]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::TokenRejected(m) if m.contains("unknown")),
        "{err}"
    );

    // Refusals created nothing and spent nothing.
    let names: Vec<String> = store
        .list_hosts(Some(&p))
        .await
        .unwrap()
        .into_iter()
        .map(|h| h.name)
        .collect();
    assert_eq!(names, ["a1", "a2", "c1", "d1"]);
    let tokens = store.list_tokens(Some(&p)).await.unwrap();
    let mut uses: Vec<(&str, TokenState, u32)> = tokens
        .iter()
        .map(|t| (t.name.as_str(), t.state, t.uses))
        .collect();
    uses.sort();
    assert_eq!(
        uses,
        [
            ("limited", TokenState::UsedUp, 2),
            ("new", TokenState::Active, 1),
            ("old", TokenState::Expired, 0),
            ("revoked", TokenState::Revoked, 1),
        ]
    );
    // Only a hint of the secret is ever listed.
    for t in &tokens {
        assert!(t.hint.contains('…'), "{}", t.hint);
        assert!(t.hint.len() < 25, "{}", t.hint);
    }
    // Revoking an unknown token is a clear NotFound.
    assert!(matches!(
        store.revoke_token("rt_nope").await,
        Err(StoreError::NotFound(_))
    ));
}

pub async fn concurrent_registrations_never_exceed_max_uses(store: &SqlStore) {
    let p = default_project();
    let t = token(store, &p, Some(5)).await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let store = store.clone();
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            store
                .register_host(&registration(&t, &format!("race-{i}"), &[]))
                .await
        }));
    }
    let mut ok = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => ok += 1,
            Err(StoreError::TokenRejected(_)) => {}
            Err(e) => panic!("unexpected error: {e:?}"),
        }
    }
    assert_eq!(ok, 5);
    assert_eq!(store.list_hosts(Some(&p)).await.unwrap().len(), 5);
    assert_eq!(store.list_tokens(Some(&p)).await.unwrap()[0].uses, 5);
}

pub async fn duplicate_host_name_is_refused_without_spending_a_use(store: &SqlStore) {
    let p = default_project();
    let t = token(store, &p, Some(3)).await;
    let first = store
        .register_host(&registration(&t, "edge-1", &[]))
        .await
        .unwrap();
    let err = store
        .register_host(&registration(&t, "edge-1", &[]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict(m) if m.contains("edge-1")),
        "{err}"
    );
    assert_eq!(store.list_tokens(Some(&p)).await.unwrap()[0].uses, 1);
    assert_eq!(store.list_hosts(None).await.unwrap().len(), 1);
    // Invalid names and tags are refused before anything is touched.
    for bad in ["", "has space", "semi;colon", &"x".repeat(254)] {
        assert!(
            matches!(
                store.register_host(&registration(&t, bad, &[])).await,
                Err(StoreError::Invalid(_))
            ),
            "{bad:?}"
        );
    }
    assert!(matches!(
        store
            .register_host(&registration(&t, "edge-2", &[("bad key", "v")]))
            .await,
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(store.list_tokens(Some(&p)).await.unwrap()[0].uses, 1);
    // The first host is intact.
    store
        .authenticate_host(&first.host.id, &first.credential)
        .await
        .unwrap();
}

/// Uses of the default project's token named `name`.
async fn token_uses(store: &SqlStore, name: &str) -> u32 {
    store
        .list_tokens(Some(&default_project()))
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.name == name)
        .unwrap()
        .uses
}

pub async fn a_registration_retried_with_its_key_returns_the_same_identity(store: &SqlStore) {
    let p = default_project();
    let t = named_token(store, &p, "first", Some(2)).await;
    let other_token = named_token(store, &p, "second", None).await;
    let key = registration_key();
    let first = store
        .register_host(&keyed_registration(&t, "edge-1", &key))
        .await
        .unwrap();
    assert!(!first.repeated);
    assert!(first.credential.starts_with("cairn_hc_"));
    assert_eq!(token_uses(store, "first").await, 1);

    // The answer was lost: every retry with the key gets the same identity, spends nothing.
    for _ in 0..2 {
        let again = store
            .register_host(&keyed_registration(&t, "edge-1", &key))
            .await
            .unwrap();
        assert!(again.repeated);
        assert_eq!(again.host.id, first.host.id);
        assert_eq!(again.host.registered_at, first.host.registered_at);
        assert_eq!(again.credential, first.credential);
    }
    assert_eq!(token_uses(store, "first").await, 1);

    // Another device (another key, or none), or the key with another token: the name is
    // taken, nothing is spent, the first host's credential is untouched.
    let other_key = registration_key();
    for reg in [
        keyed_registration(&t, "edge-1", &other_key),
        registration(&t, "edge-1", &[]),
        keyed_registration(&other_token, "edge-1", &key),
    ] {
        let err = store.register_host(&reg).await.unwrap_err();
        assert!(
            matches!(&err, StoreError::Conflict(m) if m.contains("edge-1")),
            "{err}"
        );
    }
    assert_eq!(token_uses(store, "first").await, 1);
    assert_eq!(token_uses(store, "second").await, 0);
    // A malformed key is refused before anything is touched.
    for bad in ["", "short", &"x".repeat(129), &format!("{key} ")] {
        assert!(
            matches!(
                store
                    .register_host(&keyed_registration(&t, "edge-9", bad))
                    .await,
                Err(StoreError::Invalid(_))
            ),
            "{bad:?}"
        );
    }
    assert_eq!(store.list_hosts(None).await.unwrap().len(), 1);

    // Once the host has used its credential, the key is retired: no more retries.
    store
        .authenticate_host(&first.host.id, &first.credential)
        .await
        .unwrap();
    let err = store
        .register_host(&keyed_registration(&t, "edge-1", &key))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    store
        .authenticate_host(&first.host.id, &first.credential)
        .await
        .unwrap();
    assert_eq!(token_uses(store, "first").await, 1);

    // The token's last use: a retry is answered although the token is now used up, and
    // even after it was revoked (it was valid for the attempt being repeated).
    let key2 = registration_key();
    let second = store
        .register_host(&keyed_registration(&t, "edge-2", &key2))
        .await
        .unwrap();
    assert_eq!(token_uses(store, "first").await, 2);
    let again = store
        .register_host(&keyed_registration(&t, "edge-2", &key2))
        .await
        .unwrap();
    assert_eq!(
        (again.host.id.as_str(), again.credential.as_str()),
        (second.host.id.as_str(), second.credential.as_str())
    );
    let first_token_id = store
        .list_tokens(Some(&p))
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.name == "first")
        .unwrap()
        .id;
    store.revoke_token(&first_token_id).await.unwrap();
    let again = store
        .register_host(&keyed_registration(&t, "edge-2", &key2))
        .await
        .unwrap();
    assert_eq!(again.credential, second.credential);
    // …but a new registration with that token is not.
    assert!(matches!(
        store
            .register_host(&keyed_registration(&t, "edge-3", &registration_key()))
            .await,
        Err(StoreError::TokenRejected(_))
    ));
    assert_eq!(token_uses(store, "first").await, 2);
    assert_eq!(store.list_hosts(None).await.unwrap().len(), 2);
}

pub async fn concurrent_retries_of_one_registration_make_one_host(store: &SqlStore) {
    let p = default_project();
    let t = token(store, &p, Some(1)).await;
    let key = registration_key();
    let tasks: Vec<_> = (0..12)
        .map(|_| {
            let (store, reg) = (store.clone(), keyed_registration(&t, "edge-race", &key));
            tokio::spawn(async move { store.register_host(&reg).await })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap().unwrap());
    }
    assert_eq!(answers.iter().filter(|a| !a.repeated).count(), 1);
    for a in &answers {
        assert_eq!(a.host.id, answers[0].host.id);
        assert_eq!(a.credential, answers[0].credential);
    }
    assert_eq!(store.list_hosts(None).await.unwrap().len(), 1);
    assert_eq!(store.list_tokens(Some(&p)).await.unwrap()[0].uses, 1);
    store
        .authenticate_host(&answers[0].host.id, &answers[0].credential)
        .await
        .unwrap();
}

pub async fn credentials_authenticate_only_their_own_host(store: &SqlStore) {
    let p = default_project();
    let t = token(store, &p, None).await;
    let a = store
        .register_host(&registration(&t, "a", &[]))
        .await
        .unwrap();
    let b = store
        .register_host(&registration(&t, "b", &[]))
        .await
        .unwrap();
    assert!(a.credential.starts_with("cairn_hc_"));
    assert_ne!(a.credential, b.credential);
    let host = store
        .authenticate_host(&a.host.id, &a.credential)
        .await
        .unwrap();
    assert_eq!(host.name, "a");
    assert_eq!(host.status, HostStatus::Registered);
    for (id, cred) in [
        (&a.host.id, &b.credential),
        (&b.host.id, &a.credential),
        (&a.host.id, &String::from("cairn_hc_wrong")),
        (&String::from("h_does_not_exist"), &a.credential),
    ] {
        assert!(
            matches!(
                store.authenticate_host(id, cred).await,
                Err(StoreError::Forbidden(_))
            ),
            "{id}"
        );
    }
}

pub async fn profile_scopes_are_visible_where_they_belong(store: &SqlStore) {
    store.create_tenant("acme").await.unwrap();
    store.create_tenant("other").await.unwrap();
    let east = ProjectRef::new("acme", "east");
    let west = ProjectRef::new("acme", "west");
    let elsewhere = ProjectRef::new("other", "main");
    for p in [&east, &west, &elsewhere] {
        store.create_project(p).await.unwrap();
    }
    store
        .publish_profile(&Scope::Tenant("acme".into()), &profile("base", 0, "all"))
        .await
        .unwrap();
    store
        .publish_profile(
            &Scope::Project(east.clone()),
            &profile("east-only", 0, "east"),
        )
        .await
        .unwrap();

    let names = |v: Vec<store::ProfileInfo>| v.into_iter().map(|p| p.name).collect::<Vec<_>>();
    assert_eq!(
        names(store.list_profiles(None, Some(&east)).await.unwrap()),
        ["base", "east-only"]
    );
    assert_eq!(
        names(store.list_profiles(None, Some(&west)).await.unwrap()),
        ["base"]
    );
    assert!(store
        .list_profiles(None, Some(&elsewhere))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        names(store.list_profiles(Some("acme"), None).await.unwrap()),
        ["base", "east-only"]
    );

    // Assignment follows visibility.
    let te = token(store, &east, None).await;
    let tw = token(store, &west, None).await;
    let he = store
        .register_host(&registration(&te, "e1", &[]))
        .await
        .unwrap();
    let hw = store
        .register_host(&registration(&tw, "w1", &[]))
        .await
        .unwrap();
    store
        .assign(&east, &Target::Host("e1".into()), "east-only", None)
        .await
        .unwrap();
    let err = store
        .assign(&west, &Target::Host("w1".into()), "east-only", None)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::NotFound(m) if m.contains("visible")),
        "{err}"
    );
    store
        .assign(&west, &Target::Host("w1".into()), "base", None)
        .await
        .unwrap();
    assert!(matches!(
        store
            .assign(
                &elsewhere,
                &Target::Tag {
                    key: "k".into(),
                    value: "v".into()
                },
                "base",
                None
            )
            .await,
        Err(StoreError::NotFound(_))
    ));
    // A host of one project cannot be assigned through another.
    assert!(matches!(
        store
            .assign(&west, &Target::Host("e1".into()), "base", None)
            .await,
        Err(StoreError::NotFound(_))
    ));
    let got = store.assigned_profile(&he.host.id).await.unwrap().unwrap();
    assert_eq!(
        (got.info.name.as_str(), got.info.project.as_deref()),
        ("east-only", Some("east"))
    );
    let got = store.assigned_profile(&hw.host.id).await.unwrap().unwrap();
    assert_eq!(
        (got.info.name.as_str(), got.info.project.as_deref()),
        ("base", None)
    );

    // A name lives in one scope of a tenant; another tenant may reuse it.
    let err = store
        .publish_profile(&Scope::Project(west.clone()), &profile("base", 0, "x"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict(m) if m.contains("tenant acme")),
        "{err}"
    );
    let err = store
        .publish_profile(&Scope::Tenant("acme".into()), &profile("east-only", 0, "x"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict(m) if m.contains("project acme/east")),
        "{err}"
    );
    store
        .publish_profile(
            &Scope::Tenant("other".into()),
            &profile("base", 0, "theirs"),
        )
        .await
        .unwrap();
    assert!(matches!(
        store
            .publish_profile(&Scope::Tenant("nobody".into()), &profile("x", 0, "x"))
            .await,
        Err(StoreError::NotFound(_))
    ));
}

pub async fn profiles_are_immutable_and_versions_monotonic(store: &SqlStore) {
    let scope = Scope::Tenant("default".into());
    let created = |r: Published| match r {
        Published::Created(i) => i.version,
        Published::Unchanged(i) => panic!("expected a new version, got unchanged {}", i.version),
    };
    let unchanged = |r: Published| match r {
        Published::Unchanged(i) => i.version,
        Published::Created(i) => panic!("expected unchanged, got new version {}", i.version),
    };
    // No version: the next one.
    assert_eq!(
        created(
            store
                .publish_profile(&scope, &profile("web", 0, "one"))
                .await
                .unwrap()
        ),
        1
    );
    // Same content again: nothing new.
    assert_eq!(
        unchanged(
            store
                .publish_profile(&scope, &profile("web", 0, "one"))
                .await
                .unwrap()
        ),
        1
    );
    assert_eq!(
        unchanged(
            store
                .publish_profile(&scope, &profile("web", 1, "one"))
                .await
                .unwrap()
        ),
        1
    );
    // Changed content: version 2.
    assert_eq!(
        created(
            store
                .publish_profile(&scope, &profile("web", 0, "two"))
                .await
                .unwrap()
        ),
        2
    );
    // A published version cannot be changed.
    let err = store
        .publish_profile(&scope, &profile("web", 1, "changed"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict(m) if m.contains("immutable")),
        "{err}"
    );
    let err = store
        .publish_profile(&scope, &profile("web", 2, "changed"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict(m) if m.contains("immutable")),
        "{err}"
    );
    // Explicit versions may skip ahead but never go back.
    assert_eq!(
        created(
            store
                .publish_profile(&scope, &profile("web", 5, "five"))
                .await
                .unwrap()
        ),
        5
    );
    let err = store
        .publish_profile(&scope, &profile("web", 3, "three"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict(m) if m.contains("only increase")),
        "{err}"
    );
    assert_eq!(
        created(
            store
                .publish_profile(&scope, &profile("web", 0, "six"))
                .await
                .unwrap()
        ),
        6
    );

    // Stored bodies are what was published, with the version filled in.
    let latest = store.get_profile("default", "web", None).await.unwrap();
    assert_eq!(latest.info.version, 6);
    let body: Profile = serde_json::from_str(&latest.body).unwrap();
    assert_eq!(body, profile("web", 6, "six"));
    let v1 = store.get_profile("default", "web", Some(1)).await.unwrap();
    assert_eq!(
        serde_json::from_str::<Profile>(&v1.body).unwrap(),
        profile("web", 1, "one")
    );
    assert_ne!(v1.info.sha256, latest.info.sha256);
    assert_eq!(v1.info.etag(), format!("\"{}\"", v1.info.sha256));
    let versions: Vec<u64> = store
        .list_profiles(Some("default"), None)
        .await
        .unwrap()
        .iter()
        .map(|p| p.version)
        .collect();
    assert_eq!(versions, [1, 2, 5, 6]);
    assert!(matches!(
        store.get_profile("default", "web", Some(3)).await,
        Err(StoreError::NotFound(_))
    ));
    // An invalid profile never reaches the database.
    let mut bad = profile("web", 0, "x");
    bad.layers.clear();
    assert!(matches!(
        store.publish_profile(&scope, &bad).await,
        Err(StoreError::Invalid(_))
    ));
}

pub async fn assignment_by_host_and_by_tag(store: &SqlStore) {
    let p = default_project();
    let scope = Scope::Project(p.clone());
    store
        .publish_profile(&scope, &profile("site", 0, "s1"))
        .await
        .unwrap();
    store
        .publish_profile(&scope, &profile("special", 0, "x1"))
        .await
        .unwrap();
    store
        .publish_profile(&scope, &profile("gpu", 0, "g1"))
        .await
        .unwrap();
    let t = token(store, &p, None).await;
    let h1 = store
        .register_host(&registration(&t, "h1", &[("site", "a")]))
        .await
        .unwrap()
        .host;
    let h2 = store
        .register_host(&registration(&t, "h2", &[("site", "b")]))
        .await
        .unwrap()
        .host;
    let h3 = store
        .register_host(&registration(&t, "h3", &[("site", "a"), ("gpu", "yes")]))
        .await
        .unwrap()
        .host;
    let assigned = |id: String| {
        let store = store.clone();
        async move {
            store
                .assigned_profile(&id)
                .await
                .unwrap()
                .map(|r| (r.info.name, r.info.version))
        }
    };
    assert_eq!(assigned(h1.id.clone()).await, None);

    // By tag: every host with site=a, following the latest version.
    let tag_a = Target::Tag {
        key: "site".into(),
        value: "a".into(),
    };
    let a = store.assign(&p, &tag_a, "site", None).await.unwrap();
    assert_eq!(a.target, tag_a);
    assert_eq!(assigned(h1.id.clone()).await, Some(("site".into(), 1)));
    assert_eq!(assigned(h2.id.clone()).await, None);
    assert_eq!(assigned(h3.id.clone()).await, Some(("site".into(), 1)));
    store
        .publish_profile(&scope, &profile("site", 0, "s2"))
        .await
        .unwrap();
    assert_eq!(assigned(h1.id.clone()).await, Some(("site".into(), 2)));

    // By host (by name here), pinned: wins over the tag.
    let pinned = store
        .assign(&p, &Target::Host("h1".into()), "special", Some(1))
        .await
        .unwrap();
    assert_eq!(
        pinned.target,
        Target::Host(h1.id.clone()),
        "host targets are stored by id"
    );
    store
        .publish_profile(&scope, &profile("special", 0, "x2"))
        .await
        .unwrap();
    assert_eq!(assigned(h1.id.clone()).await, Some(("special".into(), 1)));
    assert_eq!(assigned(h3.id.clone()).await, Some(("site".into(), 2)));

    // Two matching tags: the newest assignment wins.
    store
        .assign(
            &p,
            &Target::Tag {
                key: "gpu".into(),
                value: "yes".into(),
            },
            "gpu",
            None,
        )
        .await
        .unwrap();
    assert_eq!(assigned(h3.id.clone()).await, Some(("gpu".into(), 1)));
    store.assign(&p, &tag_a, "site", None).await.unwrap(); // re-assigning makes it newest
    assert_eq!(assigned(h3.id.clone()).await, Some(("site".into(), 2)));

    // Unknown version or profile: refused, nothing changed.
    assert!(matches!(
        store
            .assign(&p, &Target::Host(h2.id.clone()), "site", Some(9))
            .await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store
            .assign(&p, &Target::Host(h2.id.clone()), "nope", None)
            .await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(assigned(h2.id.clone()).await, None);

    // Unassigning the host falls back to its tag.
    assert!(store
        .unassign(&p, &Target::Host(h1.id.clone()))
        .await
        .unwrap());
    assert!(!store
        .unassign(&p, &Target::Host(h1.id.clone()))
        .await
        .unwrap());
    assert_eq!(assigned(h1.id.clone()).await, Some(("site".into(), 2)));
    let listed = store.list_assignments(Some(&p)).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed.last().unwrap().target, tag_a);
}

pub async fn events_are_idempotent_by_seq_and_drive_status(store: &SqlStore) {
    let p = default_project();
    let t = token(store, &p, None).await;
    let host = store
        .register_host(&registration(&t, "ev", &[]))
        .await
        .unwrap()
        .host;
    let id = host.id.as_str();
    let batch1 = vec![
        event(1, EventKind::StageStarted, "boot", "", ""),
        event(2, EventKind::StepChanged, "boot", "users", "created alice"),
        event(3, EventKind::StepUnchanged, "boot", "files", ""),
    ];
    let out = store.record_events(id, &batch1).await.unwrap();
    assert_eq!((out.acked_seq, out.accepted, out.duplicates), (3, 3, 0));
    let h = store.get_host(id, None).await.unwrap();
    assert_eq!(h.status, HostStatus::Applying);
    assert_eq!(
        (h.current_stage.as_str(), h.current_step.as_str()),
        ("boot", "files")
    );

    // The same batch again (an agent that never saw the ack): stored once.
    let out = store.record_events(id, &batch1).await.unwrap();
    assert_eq!((out.acked_seq, out.accepted, out.duplicates), (3, 0, 3));
    // A re-sent event with different content does not overwrite the first.
    let mut changed = batch1[1].clone();
    changed.message = "something else".into();
    let out = store.record_events(id, &[changed]).await.unwrap();
    assert_eq!(out.duplicates, 1);

    // Out of order, with a duplicate inside the batch: kept by seq.
    let mut applied = event(6, EventKind::ProfileApplied, "", "", "profile applied");
    applied.data = serde_json::json!({"profile": "web", "version": 4});
    let batch2 = vec![
        applied,
        event(5, EventKind::StageFinished, "boot", "", ""),
        event(4, EventKind::StepChanged, "boot", "hostname", ""),
        event(4, EventKind::StepChanged, "boot", "hostname", ""),
    ];
    let out = store.record_events(id, &batch2).await.unwrap();
    assert_eq!((out.acked_seq, out.accepted, out.duplicates), (6, 3, 1));
    let all = store.list_events(id, 0, 100).await.unwrap();
    let seqs: Vec<u64> = all.iter().map(|e| e.event.seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6]);
    assert_eq!(all[1].event.message, "created alice");
    assert_eq!(all[1].event.source, "user-data.yaml:2");
    assert_eq!(all[5].event.data["version"], 4);
    assert!(all.iter().all(|e| e.event.host == id));
    let h = store.get_host(id, None).await.unwrap();
    assert_eq!(h.status, HostStatus::Applied);
    assert_eq!(
        (h.applied_profile.as_deref(), h.applied_version),
        (Some("web"), Some(4))
    );
    assert_eq!(h.last_seq, 6);
    // Paging.
    let tail: Vec<u64> = store
        .list_events(id, 4, 1)
        .await
        .unwrap()
        .iter()
        .map(|e| e.event.seq)
        .collect();
    assert_eq!(tail, [5]);

    // A later failure: status failed, last error names stage, step and source.
    let out = store
        .record_events(
            id,
            &[event(
                7,
                EventKind::StepFailed,
                "network",
                "dns",
                "permission denied",
            )],
        )
        .await
        .unwrap();
    assert_eq!(out.accepted, 1);
    let h = store.get_host(id, None).await.unwrap();
    assert_eq!(h.status, HostStatus::Failed);
    assert_eq!(
        h.last_error,
        "stage network, step dns (user-data.yaml:7): permission denied"
    );
    // Seq 0 and seqs beyond i64 are refused and store nothing.
    assert!(matches!(
        store
            .record_events(id, &[event(0, EventKind::Phase, "", "", "")])
            .await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store
            .record_events(
                id,
                &[
                    event(8, EventKind::Phase, "", "", ""),
                    event(u64::MAX, EventKind::Phase, "", "", "")
                ]
            )
            .await,
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(store.list_events(id, 0, 100).await.unwrap().len(), 7);
    assert!(matches!(
        store.record_events("h_missing", &batch1).await,
        Err(StoreError::NotFound(_))
    ));
}

pub async fn heartbeat_records_inventory_and_last_seen(store: &SqlStore) {
    let p = default_project();
    let t = token(store, &p, None).await;
    let host = store
        .register_host(&registration(&t, "hb", &[("site", "x")]))
        .await
        .unwrap()
        .host;
    assert_eq!(host.inventory.cpu.cores, 4);
    assert_eq!(host.tags.get("site").map(String::as_str), Some("x"));
    store
        .heartbeat(&host.id, Some(&inventory(16)))
        .await
        .unwrap();
    let h = store.get_host(&host.id, None).await.unwrap();
    assert_eq!(h.inventory.cpu.cores, 16);
    assert!(h.last_seen >= host.last_seen);
    // Without an inventory, the stored one stays.
    store.heartbeat(&host.id, None).await.unwrap();
    assert_eq!(
        store
            .get_host(&host.id, None)
            .await
            .unwrap()
            .inventory
            .cpu
            .cores,
        16
    );
    assert!(matches!(
        store.heartbeat("h_missing", None).await,
        Err(StoreError::NotFound(_))
    ));
    // Found by name within its project too.
    assert_eq!(store.get_host("hb", Some(&p)).await.unwrap().id, host.id);
    assert!(matches!(
        store.get_host("hb", None).await,
        Err(StoreError::NotFound(_))
    ));
}

pub async fn removing_a_host_revokes_it_and_drops_its_events(store: &SqlStore) {
    let p = default_project();
    store
        .publish_profile(&Scope::Tenant("default".into()), &profile("base", 0, "x"))
        .await
        .unwrap();
    let t = token(store, &p, None).await;
    let r = store
        .register_host(&registration(&t, "gone", &[]))
        .await
        .unwrap();
    store
        .assign(&p, &Target::Host("gone".into()), "base", None)
        .await
        .unwrap();
    store
        .record_events(
            &r.host.id,
            &[event(1, EventKind::StageStarted, "boot", "", "")],
        )
        .await
        .unwrap();
    let removed = store.remove_host(&r.host.id).await.unwrap();
    assert_eq!(removed.name, "gone");
    assert!(matches!(
        store.authenticate_host(&r.host.id, &r.credential).await,
        Err(StoreError::Forbidden(_))
    ));
    assert!(store
        .list_events(&r.host.id, 0, 10)
        .await
        .unwrap()
        .is_empty());
    assert!(store.list_assignments(Some(&p)).await.unwrap().is_empty());
    // The name is free again.
    store
        .register_host(&registration(&t, "gone", &[]))
        .await
        .unwrap();
    assert!(matches!(
        store.remove_host(&r.host.id).await,
        Err(StoreError::NotFound(_))
    ));
}

pub async fn tenants_and_projects_are_named_uniquely(store: &SqlStore) {
    let tenants: Vec<String> = store
        .list_tenants()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(tenants, ["default"], "a fresh hub has the default tenant");
    store.create_tenant("acme").await.unwrap();
    assert!(matches!(
        store.create_tenant("acme").await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.create_tenant("Acme Inc").await,
        Err(StoreError::Invalid(_))
    ));
    store
        .create_project(&ProjectRef::new("acme", "default"))
        .await
        .unwrap();
    assert!(matches!(
        store
            .create_project(&ProjectRef::new("acme", "default"))
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.create_project(&ProjectRef::new("nobody", "x")).await,
        Err(StoreError::NotFound(_))
    ));
    let projects: Vec<String> = store
        .list_projects(None)
        .await
        .unwrap()
        .into_iter()
        .map(|p| format!("{}/{}", p.tenant, p.name))
        .collect();
    assert_eq!(projects, ["acme/default", "default/default"]);
    assert_eq!(store.list_projects(Some("acme")).await.unwrap().len(), 1);
    // Tokens of a project that does not exist: NotFound, nothing stored.
    assert!(matches!(
        store
            .create_token(&NewToken {
                project: ProjectRef::new("acme", "nope"),
                name: String::new(),
                expires_at: None,
                max_uses: None,
            })
            .await,
        Err(StoreError::NotFound(_))
    ));
    assert!(store.list_tokens(None).await.unwrap().is_empty());
}

pub async fn fleet_view_resolves_assignments_like_the_profile_endpoint(store: &SqlStore) {
    let p = default_project();
    let tenant = Scope::Tenant("default".into());
    store
        .publish_profile(&tenant, &profile("base", 0, "one"))
        .await
        .unwrap();
    store
        .publish_profile(&tenant, &profile("base", 0, "two"))
        .await
        .unwrap();
    store
        .publish_profile(&Scope::Project(p.clone()), &profile("local", 0, "l"))
        .await
        .unwrap();
    let t = token(store, &p, None).await;
    let mut ids = Vec::new();
    for (name, tags) in [
        ("d-tagged", vec![("site", "a")]),
        ("c-pinned", vec![("site", "a")]),
        ("b-none", vec![]),
        ("a-local", vec![("site", "b")]),
    ] {
        ids.push(
            store
                .register_host(&registration(&t, name, &tags))
                .await
                .unwrap()
                .host
                .id,
        );
    }
    store
        .assign(
            &p,
            &Target::Tag {
                key: "site".into(),
                value: "a".into(),
            },
            "base",
            None,
        )
        .await
        .unwrap();
    store
        .assign(&p, &Target::Host("c-pinned".into()), "base", Some(1))
        .await
        .unwrap();
    store
        .assign(&p, &Target::Host("a-local".into()), "local", None)
        .await
        .unwrap();
    store
        .record_events(
            &ids[0],
            &[event(1, EventKind::StageStarted, "kubernetes", "", "")],
        )
        .await
        .unwrap();

    let fleet = store.fleet(None).await.unwrap();
    let names: Vec<&str> = fleet.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(
        names,
        ["a-local", "b-none", "c-pinned", "d-tagged"],
        "sorted by name"
    );
    let seen: Vec<(Option<&str>, Option<u64>)> = fleet
        .iter()
        .map(|h| (h.assigned_profile.as_deref(), h.assigned_version))
        .collect();
    assert_eq!(
        seen,
        [
            (Some("local"), Some(1)),
            (None, None),
            (Some("base"), Some(1)),
            (Some("base"), Some(2)),
        ]
    );
    // The same answer as the profile endpoint's resolution, host by host.
    for h in &fleet {
        let served = store.assigned_profile(&h.id).await.unwrap();
        assert_eq!(
            served.map(|r| (r.info.name, r.info.version)),
            h.assigned_profile.clone().zip(h.assigned_version),
            "{}",
            h.name
        );
    }
    let tagged = fleet.iter().find(|h| h.name == "d-tagged").unwrap();
    assert_eq!(tagged.status, HostStatus::Applying);
    assert_eq!(tagged.progress.phase, Some(1));
    assert_eq!(tagged.progress.percent, 37);

    // Some hosts only; unknown ids are left out. A heartbeat shows at once.
    let before = fleet.iter().find(|h| h.name == "b-none").unwrap().last_seen;
    store.heartbeat(&ids[2], None).await.unwrap();
    let some = store
        .fleet(Some(&[ids[2].clone(), "h_missing".to_string()]))
        .await
        .unwrap();
    assert_eq!(some.len(), 1);
    assert_eq!(some[0].name, "b-none");
    assert!(some[0].last_seen >= before);
}

/// Registries: one name per scope, a project's hides the tenant's for its hosts, deleting
/// is per scope; add-on profiles attached to an assignment are served inside the host's
/// profile in order (the ETag over the whole), checked before the assignment changes.
pub async fn registries_are_scoped_and_addon_profiles_composed(store: &SqlStore) {
    use cairn_hub::http::registries::create_registry;
    use cairn_hub::registry::{Credentials, Keyring, RegistrySpec};
    use cairn_proto::registry::RegistryKind;
    let dir = tempfile::tempdir().unwrap();
    let keys = Keyring::load_or_create(dir.path()).unwrap();
    let p = default_project();
    let other = ProjectRef::new("default", "other");
    store.create_project(&other).await.unwrap();
    let spec = |scope: Scope, url: &str, pw: Option<&str>| RegistrySpec {
        scope,
        name: "corp".into(),
        kind: RegistryKind::Oci,
        url: url.into(),
        ca_pem: None,
        credentials: Credentials {
            username: pw.map(|_| "robot".to_string()),
            password: pw.map(str::to_string),
            token: None,
        },
    };
    let t = create_registry(
        store,
        Some(&keys),
        &spec(
            Scope::Tenant("default".into()),
            "https://t.example",
            Some("tenant-pw"),
        ),
    )
    .await
    .unwrap();
    assert!(t.has_credentials && t.project.is_none());
    let err = create_registry(
        store,
        Some(&keys),
        &spec(Scope::Tenant("default".into()), "https://t.example", None),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    create_registry(
        store,
        Some(&keys),
        &spec(
            Scope::Project(p.clone()),
            "https://p.example",
            Some("project-pw"),
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        store
            .list_registries(Some("default"), None)
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        store
            .list_registries(None, Some(&other))
            .await
            .unwrap()
            .len(),
        1
    );

    let tok = token(store, &p, None).await;
    let host = store
        .register_host(&registration(&tok, "h1", &[("site", "a")]))
        .await
        .unwrap()
        .host;
    let seen = store.host_registries(&host.id).await.unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].info.url, "https://p.example",
        "the project's registry hides the tenant's"
    );
    let opened = cairn_hub::registry::access(&seen[0], &keys).unwrap();
    assert_eq!(opened.password.as_deref(), Some("project-pw"));
    store
        .delete_registry(&Scope::Project(p.clone()), "corp")
        .await
        .unwrap();
    let seen = store.host_registries(&host.id).await.unwrap();
    assert_eq!(seen[0].info.url, "https://t.example");
    assert!(matches!(
        store
            .delete_registry(&Scope::Project(p.clone()), "corp")
            .await,
        Err(StoreError::NotFound(_))
    ));

    // Add-on profiles.
    let scope = Scope::Tenant("default".into());
    let infra: Profile = serde_json::from_value(serde_json::json!({"name": "infra", "layers": [
        {"kubernetes": {"flavor": "k3s", "version": "v1.31.4+k3s1"}},
        {"cni": {"type": "flannel", "version": "0.25.7"}},
        {"addons": {"manifests": [{"name": "ns", "content": "kind: Namespace"}]}}]}))
    .unwrap();
    let addon = |name: &str, release: &str| -> Profile {
        serde_json::from_value(serde_json::json!({"name": name, "layers": [
            {"addons": {"charts": [{"name": release, "chart": "c", "version": "1", "registry": "corp"}]}}]}))
        .unwrap()
    };
    store.publish_profile(&scope, &infra).await.unwrap();
    store
        .publish_profile(&scope, &addon("mon", "prom"))
        .await
        .unwrap();
    store
        .publish_profile(&scope, &addon("log", "loki"))
        .await
        .unwrap();
    store
        .publish_profile(&scope, &addon("dup", "loki"))
        .await
        .unwrap();
    let target = Target::Tag {
        key: "site".into(),
        value: "a".into(),
    };
    store.assign(&p, &target, "infra", None).await.unwrap();
    let plain = store.assigned_profile(&host.id).await.unwrap().unwrap();
    let refs = [
        store::parse_addon_ref("log@1").unwrap(),
        store::parse_addon_ref("mon").unwrap(),
    ];
    store.check_addons(&p, "infra", None, &refs).await.unwrap();
    store.attach_addons(&p, &target, &refs).await.unwrap();
    let served = store.assigned_profile(&host.id).await.unwrap().unwrap();
    assert_ne!(served.info.sha256, plain.info.sha256);
    assert_eq!(
        served.info.sha256,
        cairn_hub::secret::sha256_hex(&served.body)
    );
    let body: Profile = serde_json::from_str(&served.body).unwrap();
    let order: Vec<&str> = body
        .addon_profiles
        .iter()
        .map(|a| a.name.as_str())
        .collect();
    assert_eq!(order, ["log", "mon"]);
    let dup = [
        store::parse_addon_ref("log").unwrap(),
        store::parse_addon_ref("dup").unwrap(),
    ];
    assert!(matches!(
        store.check_addons(&p, "infra", None, &dup).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store
            .check_addons(
                &p,
                "infra",
                None,
                &[store::parse_addon_ref("infra").unwrap()]
            )
            .await,
        Err(StoreError::Invalid(_))
    ));
    store.attach_addons(&p, &target, &[]).await.unwrap();
    let again = store.assigned_profile(&host.id).await.unwrap().unwrap();
    assert_eq!(again, plain);
}
