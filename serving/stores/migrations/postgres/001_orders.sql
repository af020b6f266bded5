-- The order log: every order posted after the published snapshot, in arrival order (seq).
-- order_id is the client's idempotency key; content_key is OrderRecord.content_key() (sha256 of
-- everything but seq), compared on a retry to tell a duplicate from a conflict.
CREATE TABLE basketcast_orders (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id TEXT NOT NULL UNIQUE,
    user_id BIGINT NOT NULL,
    products BIGINT[] NOT NULL,            -- in the order they were added to the cart
    dow SMALLINT NOT NULL,                 -- 0-6, Instacart's convention
    hour SMALLINT NOT NULL,                -- 0-23
    days_since_prior DOUBLE PRECISION NULL,
    placed_at TIMESTAMPTZ NULL,
    content_key TEXT NOT NULL,
    received_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- orders_of(user_id): a user's orders in seq order.
CREATE INDEX basketcast_orders_user_seq ON basketcast_orders (user_id, seq);
