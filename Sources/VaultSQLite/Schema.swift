import GRDB

/// The schema, as an ordered list of migrations. A migration, once shipped, is never edited: add a new one.
enum Schema {
    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()

        migrator.registerMigration("v1: data keys, apps and tokens") { db in
            try db.create(table: "vault_meta") { t in
                t.primaryKey("key", .text)
                t.column("value", .text).notNull()
            }
            try db.create(table: "data_keys") { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("master_key_id", .text).notNull().indexed()
                t.column("wrapped", .blob).notNull()
                t.column("created_at", .integer).notNull()
                t.column("is_current", .boolean).notNull().defaults(to: false)
            }
            // At most one current data key.
            try db.execute(sql: "CREATE UNIQUE INDEX data_keys_one_current ON data_keys(is_current) WHERE is_current")

            try db.create(table: "apps", options: .withoutRowID) { t in
                t.primaryKey("name", .text)
                t.column("app_id", .text).notNull()
                t.column("sealed_secret", .blob).notNull()
                t.column("data_key_id", .integer).notNull().references("data_keys", onDelete: .restrict)
                t.column("created_at", .integer).notNull()
                t.column("updated_at", .integer).notNull()
            }

            try db.create(table: "tokens", options: .withoutRowID) { t in
                t.primaryKey("name", .text)
                t.column("kind", .text).notNull()
                    .check(sql: "kind IN ('user','system_user','page','app','other')")
                t.column("app", .text).references("apps", column: "name", onDelete: .restrict)
                t.column("sealed", .blob).notNull()
                t.column("data_key_id", .integer).notNull().indexed().references("data_keys", onDelete: .restrict)
                t.column("token_type", .text)
                t.column("scopes", .text).notNull().defaults(to: "[]")
                t.column("granular_scopes", .text)
                t.column("expires_at", .integer)
                t.column("data_access_expires_at", .integer)
                t.column("valid", .boolean)
                t.column("checked_at", .integer)
                t.column("last_error", .text)
                t.column("created_at", .integer).notNull()
                t.column("updated_at", .integer).notNull()
            }
        }
        migrator.registerMigration("v2: audit key and audit checkpoint") { db in
            try db.alter(table: "data_keys") { t in
                t.add(column: "purpose", .text).notNull().defaults(to: "tokens")
                    .check(sql: "purpose IN ('tokens','audit')")
            }
            try db.create(table: "audit_checkpoint") { t in
                t.primaryKey("id", .integer).check(sql: "id = 1")
                t.column("seq", .integer).notNull()
                t.column("hash", .text).notNull()
                t.column("mac", .text).notNull()
                t.column("updated_at", .integer).notNull()
            }
        }
        migrator.registerMigration("v3: no index on tokens.data_key_id") { db in
            // Re-sealing walks tokens in name order; the index only doubled the B-tree work of every re-seal.
            try db.execute(sql: "DROP INDEX IF EXISTS tokens_on_data_key_id")
        }
        migrator.registerMigration("v4: notifications") { db in
            // One row per token: its last notified state, and a delivery that is still owed.
            try db.create(table: "notifications") { t in
                t.primaryKey("token", .text)
                t.column("state", .text).notNull()
                t.column("payload", .text)
                t.column("pending", .boolean).notNull().defaults(to: false)
                t.column("attempts", .integer).notNull().defaults(to: 0)
                t.column("next_attempt_at", .integer)
                t.column("delivered_at", .integer)
                t.column("last_error", .text)
                t.column("updated_at", .integer).notNull()
            }
        }
        migrator.registerMigration("v5: index of tokens with an app") { db in
            // The daemon's re-checker asks every minute which tokens Meta can check; without this it scans them all.
            try db.execute(sql: "CREATE INDEX tokens_with_app ON tokens(app, name, checked_at, expires_at, data_access_expires_at) WHERE app IS NOT NULL")
        }
        migrator.registerMigration("v6: metadata MAC") { db in
            // Binds a token's metadata (kind, app, scopes, expiry, validity...) to its sealed value; see Vault.
            try db.alter(table: "tokens") { t in t.add(column: "meta_mac", .blob) }
        }
        migrator.registerMigration("v7: shipped audit records") { db in
            // The store's copy of each host's chain (filled by a migration from a shared store, or by
            // `audit ship`): chunks of consecutive records, the lines exactly as the host's log holds them.
            try db.create(table: "audit_chunks", options: .withoutRowID) { t in
                t.column("host", .text).notNull()
                t.column("first_seq", .integer).notNull()
                t.column("last_seq", .integer).notNull()
                t.column("lines", .text).notNull()
                t.primaryKey(["host", "first_seq"])
            }
        }
        migrator.registerMigration("v8: token changes") { db in
            // What `watch` connections are told: one row per committed change, numbered in commit order
            // (AUTOINCREMENT: a number is never reused once pruned). The vault keeps the newest 10,000.
            try db.execute(sql: "CREATE TABLE token_changes (seq INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, change TEXT NOT NULL)")
        }
        migrator.registerMigration("v9: Meta token state and check history") { db in
            // The lifecycle's own state of a token (required scopes, the state its last check put it in, who
            // issued it) and one row per check. Both go with the token: removing it removes them.
            try db.create(table: "meta_state", options: .withoutRowID) { t in
                t.primaryKey("token", .text).references("tokens", column: "name", onDelete: .cascade)
                t.column("state", .text).notNull().defaults(to: "unchecked")
                t.column("required_scopes", .text).notNull().defaults(to: "[]")
                t.column("required_targets", .text).notNull().defaults(to: "[]")
                t.column("user_id", .text)
                t.column("app_id", .text)
                t.column("issued_at", .integer)
                t.column("app_mismatch", .boolean).notNull().defaults(to: false)
                t.column("last_success_at", .integer)
                t.column("problem_since", .integer)
                t.column("refreshed_at", .integer)
                t.column("refresh_error", .text)
                t.column("refresh_failed_at", .integer)
                t.column("refresh_failed_seal", .text)
                t.column("updated_at", .integer).notNull()
            }
            // Meta asked the app to back off: no daemon of the store calls it before `until_at`.
            try db.create(table: "meta_pause") { t in
                t.primaryKey("id", .integer).check(sql: "id = 1")
                t.column("until_at", .integer).notNull()
                t.column("reason", .text).notNull()
                t.column("throttles", .integer).notNull()
            }
            try db.create(table: "meta_checks") { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("token", .text).notNull().references("tokens", column: "name", onDelete: .cascade)
                t.column("checked_at", .integer).notNull()
                t.column("verdict", .text).notNull()
                t.column("state", .text).notNull()
                t.column("scopes", .text).notNull().defaults(to: "[]")
                t.column("expires_at", .integer)
                t.column("data_access_expires_at", .integer)
                t.column("error", .text)
            }
            try db.execute(sql: "CREATE INDEX meta_checks_by_token ON meta_checks(token, id)")
            try db.execute(sql: "CREATE INDEX meta_checks_by_time ON meta_checks(checked_at)")
        }
        migrator.registerMigration("v10: the check candidates' index covers the re-checker's query") { db in
            // v5's index lacked `kind`, and without statistics SQLite preferred to scan every token in name
            // order (a million-token vault: ~150 ms a minute). With `kind` the query is answered from the
            // index alone, and it names the index (`SQLiteTransaction.checkCandidatesSQL`).
            try db.execute(sql: "DROP INDEX tokens_with_app")
            try db.execute(sql: "CREATE INDEX tokens_with_app ON tokens(app, name, checked_at, expires_at, data_access_expires_at, kind) WHERE app IS NOT NULL")
        }
        return migrator
    }
}
