/// The PostgreSQL schema, as an ordered list of migrations (the same tables as SQLite's, in PostgreSQL's
/// types). A migration, once shipped, is never edited: add a new one. Each runs in its own transaction
/// under an advisory lock, so hosts that start together migrate once. Names are `COLLATE "C"`: byte order,
/// as SQLite sorts them, whatever the database's locale.
enum Schema {
    static let migrations: [(name: String, statements: [String])] = [
        ("v1: vault tables", [
            """
            CREATE TABLE vault_meta (key text COLLATE "C" PRIMARY KEY, value text NOT NULL)
            """,
            """
            CREATE TABLE data_keys (
              id bigserial PRIMARY KEY,
              master_key_id text NOT NULL,
              wrapped bytea NOT NULL,
              created_at bigint NOT NULL,
              is_current boolean NOT NULL DEFAULT false,
              purpose text NOT NULL DEFAULT 'tokens' CHECK (purpose IN ('tokens','audit')))
            """,
            """
            CREATE UNIQUE INDEX data_keys_one_current ON data_keys(is_current) WHERE is_current
            """,
            """
            CREATE TABLE apps (
              name text COLLATE "C" PRIMARY KEY,
              app_id text NOT NULL,
              sealed_secret bytea NOT NULL,
              data_key_id bigint NOT NULL REFERENCES data_keys(id) ON DELETE RESTRICT,
              created_at bigint NOT NULL,
              updated_at bigint NOT NULL)
            """,
            """
            CREATE TABLE tokens (
              name text COLLATE "C" PRIMARY KEY,
              kind text NOT NULL CHECK (kind IN ('user','system_user','page','app','other')),
              app text COLLATE "C" REFERENCES apps(name) ON DELETE RESTRICT,
              sealed bytea NOT NULL,
              data_key_id bigint NOT NULL REFERENCES data_keys(id) ON DELETE RESTRICT,
              token_type text,
              scopes text NOT NULL DEFAULT '[]',
              granular_scopes text,
              expires_at bigint,
              data_access_expires_at bigint,
              valid boolean,
              checked_at bigint,
              last_error text,
              created_at bigint NOT NULL,
              updated_at bigint NOT NULL,
              meta_mac bytea)
            """,
            """
            CREATE INDEX tokens_with_app ON tokens(app, name) WHERE app IS NOT NULL
            """,
            """
            CREATE INDEX tokens_on_data_key ON tokens(data_key_id)
            """,
            """
            CREATE TABLE audit_checkpoints (
              host text COLLATE "C" PRIMARY KEY,
              seq bigint NOT NULL,
              hash text NOT NULL,
              mac text NOT NULL,
              updated_at bigint NOT NULL)
            """,
            """
            CREATE TABLE notifications (
              token text COLLATE "C" PRIMARY KEY,
              state text NOT NULL,
              payload text,
              pending boolean NOT NULL DEFAULT false,
              attempts integer NOT NULL DEFAULT 0,
              next_attempt_at bigint,
              delivered_at bigint,
              last_error text,
              updated_at bigint NOT NULL)
            """,
        ]),
        ("v2: change notifications", [
            // Every commit that changes a token or a data key tells each listening daemon which one, so the
            // rows it remembers never outlive the row in the database (NOTIFY is delivered at commit).
            """
            CREATE FUNCTION tokenvault_token_changed() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              IF TG_OP = 'DELETE' THEN PERFORM pg_notify('tokenvault_changes', 't:' || OLD.name);
              ELSE PERFORM pg_notify('tokenvault_changes', 't:' || NEW.name);
                IF TG_OP = 'UPDATE' AND OLD.name <> NEW.name THEN PERFORM pg_notify('tokenvault_changes', 't:' || OLD.name); END IF;
              END IF;
              RETURN NULL;
            END $$
            """,
            """
            CREATE TRIGGER tokens_changed AFTER INSERT OR UPDATE OR DELETE ON tokens
              FOR EACH ROW EXECUTE FUNCTION tokenvault_token_changed()
            """,
            """
            CREATE FUNCTION tokenvault_keys_changed() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN PERFORM pg_notify('tokenvault_changes', 'k:'); RETURN NULL; END $$
            """,
            """
            CREATE TRIGGER data_keys_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON data_keys
              FOR EACH STATEMENT EXECUTE FUNCTION tokenvault_keys_changed()
            """,
            """
            CREATE FUNCTION tokenvault_all_changed() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN PERFORM pg_notify('tokenvault_changes', '*'); RETURN NULL; END $$
            """,
            """
            CREATE TRIGGER tokens_truncated AFTER TRUNCATE ON tokens
              FOR EACH STATEMENT EXECUTE FUNCTION tokenvault_all_changed()
            """,
        ]),
        ("v3: shipped audit records", [
            // Every host's chain, copied after it is durable locally: chunks of consecutive records, the
            // lines as written, one row per shipped chunk.
            """
            CREATE TABLE audit_chunks (
              host text COLLATE "C" NOT NULL,
              first_seq bigint NOT NULL,
              last_seq bigint NOT NULL,
              lines text NOT NULL,
              PRIMARY KEY (host, first_seq),
              CHECK (last_seq >= first_seq))
            """,
            // A daemon ships megabytes of lines a second: lz4 compresses them at a fraction of pglz's CPU
            // (measured: pglz cost a third of the reads a 2-core host served). Only where the server has it.
            """
            DO $$ BEGIN
              IF EXISTS (SELECT 1 FROM pg_settings WHERE name = 'default_toast_compression' AND 'lz4' = ANY(enumvals)) THEN
                EXECUTE 'ALTER TABLE audit_chunks ALTER COLUMN lines SET COMPRESSION lz4';
              END IF;
            END $$
            """,
        ]),
        ("v4: token changes", [
            // What `watch` connections are told: one row per committed change. Writers take a transaction
            // lock before numbering theirs (PostgresTransaction.recordTokenChanges), so numbers follow
            // commit order across hosts and a reader polling past a number never misses a later commit.
            """
            CREATE TABLE token_changes (
              seq bigserial PRIMARY KEY,
              name text COLLATE "C" NOT NULL,
              change text NOT NULL)
            """,
        ]),
        ("v5: Meta token state and check history", [
            // The lifecycle's own state of a token and one row per check; both go with the token.
            """
            CREATE TABLE meta_state (
              token text COLLATE "C" PRIMARY KEY REFERENCES tokens(name) ON DELETE CASCADE,
              state text NOT NULL DEFAULT 'unchecked',
              required_scopes text NOT NULL DEFAULT '[]',
              required_targets text NOT NULL DEFAULT '[]',
              user_id text,
              app_id text,
              issued_at bigint,
              app_mismatch boolean NOT NULL DEFAULT false,
              last_success_at bigint,
              problem_since bigint,
              refreshed_at bigint,
              refresh_error text,
              refresh_failed_at bigint,
              refresh_failed_seal text,
              updated_at bigint NOT NULL)
            """,
            """
            CREATE TABLE meta_pause (
              id integer PRIMARY KEY CHECK (id = 1),
              until_at bigint NOT NULL,
              reason text NOT NULL,
              throttles integer NOT NULL)
            """,
            """
            CREATE TABLE meta_checks (
              id bigserial PRIMARY KEY,
              token text COLLATE "C" NOT NULL REFERENCES tokens(name) ON DELETE CASCADE,
              checked_at bigint NOT NULL,
              verdict text NOT NULL,
              state text NOT NULL,
              scopes text NOT NULL DEFAULT '[]',
              expires_at bigint,
              data_access_expires_at bigint,
              error text)
            """,
            "CREATE INDEX meta_checks_by_token ON meta_checks(token, id)",
            "CREATE INDEX meta_checks_by_time ON meta_checks(checked_at)",
        ]),
    ]
}
