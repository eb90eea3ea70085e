//! memori_conversation_create: what it stores, whose it is, its metadata.

use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use crate::tests::support::one;
    use pgrx::prelude::*;

    #[pg_test]
    fn conversation_create_stores_what_it_is_given() {
        let id = one::<pgrx::datum::Uuid>(
            "SELECT memori_conversation_create(title => 'Sales questions', user_id => 'bob',
                    metadata => '{\"channel\": \"slack\"}', data_source_id => 42)",
        );
        let row = Spi::get_three_with_args::<String, String, i64>(
            "SELECT title::text, user_id::text || '|' || metadata::text || '|' || is_active, data_source_id
               FROM memori_conversations WHERE conversation_id = $1",
            &[id.into()],
        )
        .unwrap();
        assert_eq!(row.0.as_deref(), Some("Sales questions"));
        assert_eq!(row.1.as_deref(), Some("bob|{\"channel\": \"slack\"}|true"));
        assert_eq!(row.2, Some(42));
    }

    #[pg_test]
    fn conversation_user_defaults_to_setting_then_current_user() {
        let me = one::<String>("SELECT current_user::text");
        let a = one::<pgrx::datum::Uuid>("SELECT memori_conversation_create()");
        Spi::run("SET LOCAL memori.user_id = 'end-user-7'").unwrap();
        let b = one::<pgrx::datum::Uuid>("SELECT memori_conversation_create('x')");
        let user = |id: pgrx::datum::Uuid| {
            Spi::get_one_with_args::<String>(
                "SELECT user_id::text FROM memori_conversations WHERE conversation_id = $1",
                &[id.into()],
            )
            .unwrap()
            .unwrap()
        };
        assert_eq!(user(a), me);
        assert_eq!(user(b), "end-user-7");
        assert_eq!(
            one::<String>("SELECT metadata::text FROM memori_conversations WHERE title IS NULL"),
            "{}"
        );
    }

    #[pg_test(error = "memori: metadata must be a JSON object, not an array")]
    fn conversation_metadata_must_be_an_object() {
        Spi::run("SELECT memori_conversation_create(metadata => '[1]')").unwrap();
    }

    #[pg_test(error = "memori: user_id must not be empty")]
    fn conversation_user_must_not_be_empty() {
        Spi::run("SELECT memori_conversation_create(user_id => '')").unwrap();
    }
}
