// Package mediaapi will hold the content repository: upload, download, thumbnails, the remote
// media cache and its storage on disk or S3 (issue 6).
package mediaapi
