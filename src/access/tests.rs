use super::*;
use crate::config::Password;

/// What Postgres 15 stored for `CREATE ROLE ... PASSWORD 'correct horse battery staple'`
/// with `password_encryption = 'scram-sha-256'`.
const POSTGRES_VERIFIER: &str = "SCRAM-SHA-256$4096:jJt/K7oEk9wcTo35AHpHbQ==$wOUiI6LFOTfNd2f1PJA96YTIiaMdZnIGKhUKiwKY9Iw=:Tw8h3+L+WDZYhfhru7tPJI9f+lM2v4ZfmXJ5m4KG1qc=";

fn user(name: &str, password: Option<&str>, token: Option<&str>) -> UserConfig {
    UserConfig {
        name: name.into(),
        password: password.map(Into::into),
        token: token.map(Into::into),
        write: vec!["events".into()],
        read: vec!["*".into()],
        admin: false,
    }
}

fn basic(name: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{name}:{password}")))
}

#[test]
fn a_password_is_checked_against_its_verifier_again_after_it_passed() {
    let check = PasswordCheck::new(Password::Plain("s3cret"));
    assert!(!check.passes("s3cret "), "a wrong password fails");
    assert!(check.passes("s3cret"));
    assert!(check.passes("s3cret"), "the remembered password passes");
    assert!(
        !check.passes("S3cret"),
        "a wrong one still fails once another passed"
    );
}

#[test]
fn a_verifier_postgres_made_checks_the_password_it_was_made_from() {
    let verifier = crate::config::ScramVerifier::parse(POSTGRES_VERIFIER).unwrap();
    let computed = verifier_of(
        "correct horse battery staple",
        &verifier.salt,
        verifier.iterations,
    );
    assert_eq!(
        computed, verifier,
        "the same salt and rounds give Postgres's keys"
    );
    let check = PasswordCheck::new(Password::Verifier(verifier));
    assert!(check.passes("correct horse battery staple"));
    assert!(!check.passes("correct horse battery"));
}

#[tokio::test]
async fn basic_and_bearer_credentials_name_their_user_and_nothing_else_passes() {
    let access = Arc::new(Access::new(&[
        user("app", Some("app-password"), Some("app-token-0123456789")),
        user("verified", Some(POSTGRES_VERIFIER), None),
    ]));
    let name = |caller: Result<Caller, Unauthenticated>| caller.map(|c| c.name().map(String::from));
    let app = Ok(Some("app".to_string()));
    assert_eq!(
        name(access.authenticate(Some(&basic("app", "app-password"))).await),
        app
    );
    assert_eq!(
        name(access.authenticate(Some("bearer app-token-0123456789")).await),
        app
    );
    assert_eq!(
        name(
            access
                .authenticate(Some(&basic("verified", "correct horse battery staple")))
                .await
        ),
        Ok(Some("verified".to_string()))
    );
    let wrong = Err(Unauthenticated::Wrong);
    assert_eq!(
        name(access.authenticate(Some(&basic("app", "app-passwor"))).await),
        wrong
    );
    assert_eq!(
        name(access.authenticate(Some(&basic("nobody", "app-password"))).await),
        wrong
    );
    assert_eq!(
        name(access.authenticate(Some("Bearer app-token-012345678")).await),
        wrong
    );
    assert_eq!(
        name(access.authenticate(None).await),
        Err(Unauthenticated::Missing)
    );
    assert_eq!(
        name(access.authenticate(Some("Digest username=app")).await),
        Err(Unauthenticated::Malformed)
    );
    assert_eq!(
        name(access.authenticate(Some("Basic !!!")).await),
        Err(Unauthenticated::Malformed)
    );
}

#[tokio::test]
async fn without_users_anyone_may_write_and_read_everything() {
    let access = Arc::new(Access::new(&[]));
    let caller = access.authenticate(None).await.unwrap();
    assert!(caller.may_write("events") && caller.may_read("logs") && !caller.is_admin());
}

#[test]
fn grants_name_tables_or_every_table() {
    let access = Access::new(&[user("app", Some("p"), None)]);
    let caller = Caller::User(access.user("app").unwrap().clone());
    assert!(caller.may_write("events"));
    assert!(!caller.may_write("logs"), "write names events alone");
    assert!(caller.may_read("logs"), "read is \"*\"");
    assert!(!caller.is_admin());
}
