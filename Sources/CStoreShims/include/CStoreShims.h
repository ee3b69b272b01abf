#ifndef TOKENVAULT_CSTORESHIMS_H
#define TOKENVAULT_CSTORESHIMS_H

/// Turns off SQLite's memory statistics (SQLITE_CONFIG_MEMSTATUS) for this process. With them on, every
/// allocation SQLite makes takes one process-wide mutex, so two threads reading at once contend on it on
/// every row (measured: a point lookup went from 3.1 to 8.1 us with two reader threads). sqlite3_config
/// is variadic, which Swift cannot call; it only works before SQLite initialises, so the store calls this
/// before it opens its first connection. Returns SQLite's result code (SQLITE_MISUSE if too late).
int tv_sqlite_disable_memstatus(void);

#endif
