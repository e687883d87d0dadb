export { RecordingPublisher, recordPublishedEvents } from './recording-publisher.js';
