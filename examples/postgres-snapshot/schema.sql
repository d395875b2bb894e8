CREATE TABLE IF NOT EXISTS products (id bigint PRIMARY KEY, name text NOT NULL, price numeric(10,2));
INSERT INTO products VALUES (1, 'kettle', 24.90), (2, 'teapot', 31.00), (3, 'mug', 8.50)
    ON CONFLICT (id) DO NOTHING;
