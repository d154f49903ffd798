DROP TABLE __SCHEMA__.river_migration;
