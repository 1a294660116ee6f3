-- Layout 1 of the PostgreSQL backend (storage/postgres): every table the
-- service uses. Applied at start under an advisory lock and recorded in
-- varcade_migrations, like the sled layouts in this directory.
--
-- User ids and game ids are compared in byte order (COLLATE "C"), as the
-- board's tie-break and the lobby require.

-- Games: the matchmaker's data. `record` is the whole game (postcard); the
-- other columns are what queries select on. `listing` is the lobby place
-- while the game is listed (from `lobby_places`, so later listings sort
-- after earlier ones whichever node made them).
CREATE TABLE games (
    game_id text COLLATE "C" PRIMARY KEY,
    product_id text COLLATE "C" NOT NULL,
    state smallint NOT NULL,
    since_us bigint NOT NULL,
    listing bigint,
    creator_id text COLLATE "C" NOT NULL,
    creator_rating bigint,
    record bytea NOT NULL
);
CREATE INDEX games_lobby ON games (product_id, listing) WHERE listing IS NOT NULL;
CREATE INDEX games_rating ON games (product_id, creator_rating, listing) WHERE listing IS NOT NULL;
CREATE INDEX games_age ON games (state, since_us);
CREATE SEQUENCE lobby_places START 1099511627776;
-- Moved by every transaction that changes a listing, so each node sees
-- when to read the lobbies again.
CREATE SEQUENCE lobby_changes;

-- The event log: one row per appended frame, events `first_id..=last_id`.
-- `log_head` is the one row every append locks and moves, so ids are
-- handed out in commit order across nodes.
CREATE TABLE log_head (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    next_id bigint NOT NULL
);
INSERT INTO log_head VALUES (true, 1);
CREATE TABLE frames (
    first_id bigint PRIMARY KEY,
    last_id bigint NOT NULL UNIQUE,
    ts_ms bigint NOT NULL,
    events text NOT NULL  -- the events as a JSON array
);
-- Idempotent producers: the highest envelope seq and its frame's last id.
CREATE TABLE producers (
    producer text COLLATE "C" PRIMARY KEY,
    seq bigint NOT NULL,
    last_id bigint NOT NULL
);
-- RESP IDMP: a producer's remembered iids, numbered, and each first id.
CREATE TABLE idmp (
    producer text COLLATE "C" NOT NULL,
    n bigint NOT NULL,
    iid text COLLATE "C" NOT NULL,
    first_id bigint NOT NULL,
    PRIMARY KEY (producer, n),
    UNIQUE (producer, iid)
);

-- Each consumer's cursor, moved in the transaction of its effects.
CREATE TABLE cursors (
    name text PRIMARY KEY,
    position bigint NOT NULL
);
INSERT INTO cursors VALUES ('matchmaker', 0), ('stats', 0);

-- Leases: who runs each consumer and curation, until when.
CREATE TABLE leases (
    name text PRIMARY KEY,
    holder text NOT NULL,
    expires timestamptz NOT NULL
);

-- Player stats counters (lifetime).
CREATE TABLE players (
    product_id text COLLATE "C" NOT NULL,
    user_id text COLLATE "C" NOT NULL,
    counters jsonb NOT NULL,
    PRIMARY KEY (product_id, user_id)
);
-- Scores per board: `season` is '' for a product's lifetime board.
-- `neg_score` lets one index serve the board order (score descending, then
-- user id ascending) as a range.
CREATE TABLE scores (
    product_id text COLLATE "C" NOT NULL,
    season text COLLATE "C" NOT NULL,
    user_id text COLLATE "C" NOT NULL,
    score bigint NOT NULL,
    neg_score bigint GENERATED ALWAYS AS (-score) STORED,
    PRIMARY KEY (product_id, season, user_id)
);
CREATE INDEX scores_order ON scores (product_id, season, neg_score, user_id);
-- How many players each board has per score and user-id bucket (the id's
-- first two characters), kept in the scores' transaction: a rank sums the
-- counts above the player and counts only the player's own bucket.
CREATE TABLE score_buckets (
    product_id text COLLATE "C" NOT NULL,
    season text COLLATE "C" NOT NULL,
    score bigint NOT NULL,
    bucket text COLLATE "C" NOT NULL,
    n bigint NOT NULL,
    PRIMARY KEY (product_id, season, score, bucket)
);
-- Stored seasons of products with seasons.
CREATE TABLE seasons (
    product_id text COLLATE "C" NOT NULL,
    season text COLLATE "C" NOT NULL,
    starts_ms bigint NOT NULL,
    ends_ms bigint NOT NULL,
    PRIMARY KEY (product_id, season)
);
