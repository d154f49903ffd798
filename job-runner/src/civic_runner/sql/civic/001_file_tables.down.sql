DROP TABLE __SCHEMA__.file_upload_requests;
DROP TABLE __SCHEMA__.files;
DROP FUNCTION __SCHEMA__.civic_uuid_v7;
