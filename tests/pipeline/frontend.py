"""What Civic OS's frontend does to the database (file-upload.service.ts, file-thumbnail.component.ts),
on either schema the tests run: the project's own copy of the file tables (no RPCs: the frontend's
effects written directly) or the Civic OS v0.70 fixture (its real RPCs, called as PostgREST calls
them: as `authenticator` switched to `authenticated` with a user's JWT claims)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Protocol

from devenv import civic_os
from tests.pipeline import conftest as project
from tests.support.harness import migrate

ENTITY = "issues"


class Frontend(Protocol):
    name: str
    url: str  # a superuser's URL: what the worker connects with in most tests, and for assertions

    def request_upload_url(self, entity_id: str, file_name: str, file_type: str) -> str: ...

    def get_upload_url(self, request_id: str) -> dict[str, Any]:
        """{status, url, file_id, error}, as the RPC returns them."""
        ...

    def create_file_record(
        self,
        *,
        file_id: str,
        entity_id: str,
        file_name: str,
        file_type: str,
        size: int,
        bucket: str,
        key: str,
        thumbnail_status: str,
    ) -> None: ...

    def thumbnail_status(self, file_id: str) -> str | None:
        """`GET /files?id=eq.<id>&select=thumbnail_status` (None: not visible)."""
        ...


@dataclass
class ProjectSchema:
    url: str
    name: str = "project schema"

    def request_upload_url(self, entity_id: str, file_name: str, file_type: str) -> str:
        return project.request_upload(self.url, file_name, file_type, ENTITY, entity_id)

    def get_upload_url(self, request_id: str) -> dict[str, Any]:
        r = project.upload_request(self.url, request_id)
        return {"status": r["status"], "url": r["presigned_url"], "file_id": r["file_id"], "error": r["error_message"]}

    def create_file_record(
        self,
        *,
        file_id: str,
        entity_id: str,
        file_name: str,
        file_type: str,
        size: int,
        bucket: str,
        key: str,
        thumbnail_status: str,
    ) -> None:
        project.create_file_record(
            self.url,
            file_id=file_id,
            bucket=bucket,
            key=key,
            file_type=file_type,
            file_size=size,
            entity_type=ENTITY,
            entity_id=entity_id,
            file_name=file_name,
            thumbnail_status=thumbnail_status,
        )

    def thumbnail_status(self, file_id: str) -> str | None:
        return str(project.file_row(self.url, file_id)["thumbnail_status"])


@dataclass
class CivicOsV070:
    """A signed-in user with create and read permission on `issues` (a role named `editor`)."""

    url: str
    user: uuid.UUID
    name: str = "Civic OS v0.70 fixture"

    @classmethod
    def install(cls, url: str) -> CivicOsV070:
        civic_os.install(url)
        civic_os.grant(url, "editor", ENTITY, "create")
        civic_os.grant(url, "editor", ENTITY, "read")
        return cls(url, civic_os.create_user(url, roles=("editor",)))

    @property
    def claims(self) -> dict[str, Any]:
        return civic_os.claims_for(self.user)

    def request_upload_url(self, entity_id: str, file_name: str, file_type: str) -> str:
        params = {"p_entity_type": ENTITY, "p_entity_id": entity_id, "p_file_name": file_name, "p_file_type": file_type}
        (row,) = civic_os.rpc(self.url, "request_upload_url", params, claims=self.claims)
        return str(next(iter(row.values())))

    def get_upload_url(self, request_id: str) -> dict[str, Any]:
        (row,) = civic_os.rpc(self.url, "get_upload_url", {"p_request_id": request_id}, claims=self.claims)
        return row

    def create_file_record(
        self,
        *,
        file_id: str,
        entity_id: str,
        file_name: str,
        file_type: str,
        size: int,
        bucket: str,
        key: str,
        thumbnail_status: str,
    ) -> None:
        params = {
            "p_id": file_id,
            "p_entity_type": ENTITY,
            "p_entity_id": entity_id,
            "p_file_name": file_name,
            "p_file_type": file_type,
            "p_file_size": size,
            "p_s3_bucket": bucket,
            "p_s3_original_key": key,
            "p_thumbnail_status": thumbnail_status,
        }
        civic_os.rpc(self.url, "create_file_record", params, claims=self.claims)

    def thumbnail_status(self, file_id: str) -> str | None:
        rows = civic_os.select_files(self.url, self.claims, id=file_id, columns=["thumbnail_status"])
        return str(rows[0]["thumbnail_status"]) if rows else None


SCHEMAS = ("project", "civic-os-v0.70")


def make_frontend(schema: str, url: str) -> Frontend:
    """A fresh database `url` made into one of SCHEMAS."""
    if schema == "project":
        migrate(url, "metadata", civic=True)
        return ProjectSchema(url)
    return CivicOsV070.install(url)
