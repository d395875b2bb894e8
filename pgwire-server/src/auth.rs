//! Logins: SCRAM-SHA-256 against the users of the manifest's `[serve]` section.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion_postgres::pgwire::api::ConnectionManager;
use datafusion_postgres::pgwire::api::auth::sasl::SASLAuthStartupHandler;
use datafusion_postgres::pgwire::api::auth::sasl::scram::{ScramAuth, gen_salted_password};
use datafusion_postgres::pgwire::api::auth::{
    AuthSource, DefaultServerParameterProvider, LoginInfo, Password,
};
use datafusion_postgres::pgwire::error::{PgWireError, PgWireResult};

use crate::User;

const ITERATIONS: usize = 4096;

/// The startup handler of one connection (it keeps that connection's SASL state).
pub(crate) type Startup = SASLAuthStartupHandler<DefaultServerParameterProvider>;

#[derive(Debug)]
struct Users(Arc<Vec<User>>);

#[async_trait]
impl AuthSource for Users {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        let name = login.user().unwrap_or_default();
        let Some(user) = self.0.iter().find(|u| u.name == name) else {
            // The same error as a wrong password: a login does not reveal who exists.
            return Err(PgWireError::InvalidPassword(name.to_string()));
        };
        let salt = uuid::Uuid::new_v4().into_bytes().to_vec();
        let salted = gen_salted_password(&user.password, &salt, ITERATIONS);
        Ok(Password::new(Some(salt), salted))
    }
}

pub(crate) fn startup(users: Arc<Vec<User>>, connections: Arc<ConnectionManager>) -> Startup {
    let mut scram = ScramAuth::new(Arc::new(Users(users)));
    scram.set_iterations(ITERATIONS);
    SASLAuthStartupHandler::new(Arc::new(DefaultServerParameterProvider::default()))
        .with_scram(scram)
        .with_connection_manager(connections)
}
