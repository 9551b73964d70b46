CREATE TABLE `catalog_objects` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`kind` text NOT NULL,
	`key` text NOT NULL,
	`body` text,
	`enabled` integer NOT NULL,
	`created_at` integer NOT NULL,
	`updated_at` integer NOT NULL,
	`updated_by` text NOT NULL
);
--> statement-breakpoint
CREATE UNIQUE INDEX `catalog_objects_kind_key` ON `catalog_objects` (`kind`,`key`);--> statement-breakpoint
ALTER TABLE `audit_events` ADD `detail` text;