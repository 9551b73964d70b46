CREATE TABLE `replay_entries` (
	`key` text PRIMARY KEY NOT NULL,
	`until` integer NOT NULL
);
--> statement-breakpoint
CREATE INDEX `replay_entries_until_idx` ON `replay_entries` (`until`);