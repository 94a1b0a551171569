//! Owners (`shop:42`, `creator:7`): whose jobs, uploads and streams they are.
//! A token bound to an owner sees and touches only that owner's things, and
//! the others answer as if they did not exist (404), so their ids and keys
//! are not confirmed; it creates things only for its owner.

use super::auth::Principal;
use super::error::ApiError;
use crate::store::{ObjectKey, Store};
use crate::validation::check_id;

impl Principal {
    /// Whether this caller may see a thing owned by `owner`.
    pub fn sees(&self, owner: Option<&str>) -> bool {
        match &self.owner {
            None => true,
            Some(mine) => owner == Some(mine.as_str()),
        }
    }

    /// The owner of something this caller creates, asked for `requested`: a
    /// bound token's own owner (another is refused), or what an unbound
    /// token asks for.
    pub fn owner_for(&self, requested: Option<String>) -> Result<Option<String>, ApiError> {
        if let Some(owner) = &requested {
            check_id(owner).map_err(|e| {
                ApiError::validation(vec![crate::validation::FieldError::new("owner", e)])
            })?;
        }
        match (&self.owner, requested) {
            (None, requested) => Ok(requested),
            (Some(mine), None) => Ok(Some(mine.clone())),
            (Some(mine), Some(asked)) if *mine == asked => Ok(Some(asked)),
            (Some(mine), Some(_)) => Err(ApiError::Forbidden(format!(
                "the token `{}` acts only for `{mine}`",
                self.name
            ))),
        }
    }

    /// Whose things a list shows: a bound token's own owner's (a list asked
    /// for another owner shows nothing), or what an unbound token asks for.
    pub fn list_scope(&self, asked: Option<String>) -> ListScope {
        match (&self.owner, asked) {
            (None, asked) => ListScope::Owner(asked),
            (Some(mine), None) => ListScope::Owner(Some(mine.clone())),
            (Some(mine), Some(asked)) if *mine == asked => ListScope::Owner(Some(asked)),
            (Some(_), Some(_)) => ListScope::Nothing,
        }
    }
}

/// What a list may show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListScope {
    /// This owner's things, or everyone's for `None`.
    Owner(Option<String>),
    /// Nothing: a bound token asked for another owner's.
    Nothing,
}

/// For a bound caller, each of `keys` must be an object of its owner; one that
/// is missing or another's answers 404 `object_not_found`, the same.
pub async fn check_objects(
    caller: &Principal,
    store: &dyn Store,
    keys: impl IntoIterator<Item = &ObjectKey>,
) -> Result<(), ApiError> {
    if caller.owner.is_none() {
        return Ok(());
    }
    for key in keys {
        let info = store.head(key).await?;
        if !info.is_some_and(|i| caller.sees(i.owner.as_deref())) {
            return Err(ApiError::ObjectNotFound);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Role;

    fn caller(owner: Option<&str>) -> Principal {
        Principal {
            name: "t".into(),
            role: Role::Jobs,
            owner: owner.map(str::to_string),
        }
    }

    #[test]
    fn bound_callers_see_and_make_only_their_own() {
        let bound = caller(Some("shop:42"));
        assert!(bound.sees(Some("shop:42")));
        assert!(!bound.sees(Some("shop:7")));
        assert!(!bound.sees(None));
        assert_eq!(bound.owner_for(None).unwrap().as_deref(), Some("shop:42"));
        assert!(matches!(
            bound.owner_for(Some("shop:7".into())),
            Err(ApiError::Forbidden(_))
        ));
        assert_eq!(
            bound.list_scope(None),
            ListScope::Owner(Some("shop:42".into()))
        );
        assert_eq!(bound.list_scope(Some("shop:7".into())), ListScope::Nothing);

        let admin = caller(None);
        assert!(admin.sees(None) && admin.sees(Some("shop:7")));
        assert_eq!(admin.owner_for(None).unwrap(), None);
        assert_eq!(
            admin.owner_for(Some("shop:7".into())).unwrap().as_deref(),
            Some("shop:7")
        );
        assert!(matches!(
            admin.owner_for(Some("shop 7".into())),
            Err(ApiError::Validation { .. })
        ));
    }
}
