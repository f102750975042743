//! Releases: versions computed from Conventional Commits, changelogs, duplicates, quality checks.

use rp_proto::release::v1 as pb;
use rp_test_support::authed;
use tonic::Code;

use crate::{receiver::Receiver, stack};

fn commit(sha: &str, message: &str) -> pb::Commit {
    pb::Commit { sha: sha.into(), message: message.into(), author: "dev".into(), timestamp: None }
}

fn from_commits(messages: &[&str], pre_release: &str) -> pb::CreateReleaseRequest {
    pb::CreateReleaseRequest {
        app: "shop".into(),
        commits: messages.iter().enumerate().map(|(i, m)| commit(&format!("{i:040}"), m)).collect(),
        pre_release: pre_release.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn versions_are_computed_from_conventional_commits_and_never_repeat() {
    let stack = stack().await;
    let receiver = Receiver::start().await;
    let people = stack.pipeline(&receiver).await;
    let mut release = stack.release.clone();
    let client = stack.release.clone();
    let create = |request: pb::CreateReleaseRequest| {
        let mut release = client.clone();
        let token = people.developer.clone();
        async move { release.create_release(authed(&token, request)).await }
    };

    let first = create(from_commits(&["feat: storefront", "docs: readme"], "")).await.unwrap().into_inner();
    assert_eq!(
        (first.version.as_str(), first.bump.as_str()),
        ("0.1.0", "minor"),
        "the configured initial version"
    );
    let fix = create(from_commits(&["fix(cart): rounding"], "")).await.unwrap().into_inner();
    assert_eq!(fix.version, "0.1.1");
    let breaking = create(from_commits(&["feat!: new checkout"], "")).await.unwrap().into_inner();
    assert_eq!(breaking.version, "0.2.0", "pre-1.0: breaking bumps the minor version");
    let explicit = create(pb::CreateReleaseRequest {
        app: "shop".into(),
        version: "1.0.0".into(),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner();
    assert_eq!(explicit.bump, "explicit");
    let footer = create(from_commits(&["fix: tidy\n\nBREAKING CHANGE: config renamed"], ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(footer.version, "2.0.0");
    assert!(
        footer.changelog.contains("### ⚠ BREAKING CHANGES") && footer.changelog.contains("config renamed"),
        "{}",
        footer.changelog
    );
    let rc = create(from_commits(&["feat: wishlist"], "rc")).await.unwrap().into_inner();
    assert_eq!(rc.version, "2.1.0-rc.1");
    let rc2 = create(from_commits(&["fix: wishlist"], "rc")).await.unwrap().into_inner();
    assert_eq!(rc2.version, "2.1.0-rc.2");

    let preview = release
        .preview_release(authed(
            &people.viewer,
            from_commits(&["feat: a", "fix: b", "chore: c", "not conventional"], ""),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((preview.version.as_str(), preview.previous_version.as_str()), ("2.1.0", "2.1.0-rc.2"));
    assert_eq!(preview.ignored_commits, 1);
    assert!(preview.changelog.contains("### Features") && preview.changelog.contains("### Bug Fixes"));

    let nothing = create(from_commits(&["docs: only docs", "chore: deps"], "")).await.unwrap_err();
    assert_eq!(nothing.code(), Code::FailedPrecondition);
    assert!(nothing.message().contains("no releasable commits"), "{}", nothing.message());
    let duplicate = create(pb::CreateReleaseRequest {
        app: "shop".into(),
        version: "1.0.0".into(),
        ..Default::default()
    })
    .await
    .unwrap_err();
    assert_eq!(duplicate.code(), Code::AlreadyExists);
    assert!(duplicate.message().contains("1.0.0"));
    let bad =
        create(pb::CreateReleaseRequest { app: "shop".into(), version: "1.0".into(), ..Default::default() })
            .await
            .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    let bad_digest = create(pb::CreateReleaseRequest {
        app: "shop".into(),
        version: "9.0.0".into(),
        artifact_digest: "md5:x".into(),
        ..Default::default()
    })
    .await
    .unwrap_err();
    assert_eq!(bad_digest.code(), Code::InvalidArgument);
    let viewer = release
        .create_release(authed(
            &people.viewer,
            pb::CreateReleaseRequest { app: "shop".into(), version: "9.9.9".into(), ..Default::default() },
        ))
        .await
        .unwrap_err();
    assert_eq!(viewer.code(), Code::PermissionDenied);

    let listed = release
        .list_releases(authed(
            &people.viewer,
            pb::ListReleasesRequest { app: "shop".into(), page_size: 3, ..Default::default() },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        listed.releases.iter().map(|r| r.version.as_str()).collect::<Vec<_>>(),
        ["2.1.0-rc.2", "2.1.0-rc.1", "2.0.0"]
    );
    assert!(!listed.next_page_token.is_empty());
    // Asked for by id, from the first page's token: the next releases, with the app's name.
    let mut everything = release
        .list_releases(authed(
            &people.viewer,
            pb::ListReleasesRequest { app: "shop".into(), page_size: 200, ..Default::default() },
        ))
        .await
        .unwrap()
        .into_inner()
        .releases;
    assert!(everything.len() > 4, "{} releases", everything.len());
    let app_id = release
        .get_app(authed(&people.viewer, pb::GetAppRequest { app: "shop".into() }))
        .await
        .unwrap()
        .into_inner()
        .id;
    let second = release
        .list_releases(authed(
            &people.viewer,
            pb::ListReleasesRequest {
                app: app_id.clone(),
                page_size: 2,
                page_token: listed.next_page_token.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let versions = |releases: &[pb::Release]| releases.iter().map(|r| r.version.clone()).collect::<Vec<_>>();
    assert_eq!(versions(&second.releases), versions(&everything[3..5]));
    assert!(
        second.releases.iter().all(|r| r.app == "shop" && r.created_at.is_some() && !r.created_by.is_empty())
    );
    let last = everything.pop().unwrap();
    let after_last = release
        .list_releases(authed(
            &people.viewer,
            pb::ListReleasesRequest { app: app_id, page_size: 5, page_token: last.id, ..Default::default() },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(after_last.releases.is_empty() && after_last.next_page_token.is_empty());
    let unknown = release
        .list_releases(authed(
            &people.viewer,
            pb::ListReleasesRequest { app: "no-such-app".into(), page_size: 5, ..Default::default() },
        ))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    // The list's default view leaves out commits and changelog but counts the commits.
    let newest = &listed.releases[0];
    assert_eq!((newest.commit_count, newest.commits.len(), newest.changelog.as_str()), (1, 0, ""));
    let list = |view: i32| {
        let mut release = release.clone();
        let request =
            pb::ListReleasesRequest { app: "shop".into(), page_size: 1, view, ..Default::default() };
        let token = people.viewer.clone();
        async move { release.list_releases(authed(&token, request)).await }
    };
    let full = list(pb::ReleaseView::Full.into()).await.unwrap().into_inner().releases.remove(0);
    assert_eq!((full.version.as_str(), full.commit_count), ("2.1.0-rc.2", 1));
    assert_eq!(full.commits.iter().map(|c| c.message.as_str()).collect::<Vec<_>>(), ["fix: wishlist"]);
    assert!(full.changelog.contains("wishlist"), "{}", full.changelog);
    assert_eq!(list(9).await.unwrap_err().code(), Code::InvalidArgument);
}

#[tokio::test]
async fn quality_checks_keep_their_latest_result() {
    let stack = stack().await;
    let receiver = Receiver::start().await;
    let people = stack.pipeline(&receiver).await;
    stack.release_version(&people.developer, "shop", "1.0.0").await;
    let mut release = stack.release.clone();
    let report = |name: &str, status: &str, value: Option<f64>| pb::ReportQualityCheckRequest {
        app: "shop".into(),
        version: "1.0.0".into(),
        name: name.into(),
        status: status.into(),
        value,
        url: "https://ci.example.com/run/1".into(),
    };
    release.report_quality_check(authed(&people.qa, report("coverage", "failed", Some(71.0)))).await.unwrap();
    release.report_quality_check(authed(&people.qa, report("coverage", "passed", Some(93.5)))).await.unwrap();
    release.report_quality_check(authed(&people.qa, report("e2e", "passed", None))).await.unwrap();
    let bad =
        release.report_quality_check(authed(&people.qa, report("e2e", "green", None))).await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    let denied = release
        .report_quality_check(authed(&people.viewer, report("e2e", "passed", None)))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let got = release
        .get_release(authed(
            &people.viewer,
            pb::GetReleaseRequest { app: "shop".into(), version: "1.0.0".into(), id: String::new() },
        ))
        .await
        .unwrap()
        .into_inner();
    let checks: Vec<(&str, &str, Option<f64>)> =
        got.quality_checks.iter().map(|c| (c.name.as_str(), c.status.as_str(), c.value)).collect();
    assert_eq!(checks, vec![("coverage", "passed", Some(93.5)), ("e2e", "passed", None)]);
}
