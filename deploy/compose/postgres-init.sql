-- Run once by the postgres image, on the first start of an empty data volume
-- (/docker-entrypoint-initdb.d), as POSTGRES_USER, who owns both databases.
-- basketcast_orders: the order log (BASKETCAST_ORDER_LOG; basketcast creates its tables itself).
-- mlflow: the MLflow tracking server's backend store (MLflow migrates its schema at start).
-- The names are fixed: docker-compose.yml's DSNs use them.
CREATE DATABASE basketcast_orders;
CREATE DATABASE mlflow;
