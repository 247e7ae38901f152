// Live progress on a job page: the console's own event stream (session cookie; EventSource sends no headers).
// Progress and state update in place; when the job's state changes, the page reloads to show its new story.
document.addEventListener('DOMContentLoaded', () => {
  const el = document.querySelector('[data-live-job]');
  if (!el || !window.EventSource) return;
  const id = el.getAttribute('data-live-job');
  const shown = el.getAttribute('data-state');
  const bar = el.querySelector('progress');
  const label = el.querySelector('[data-progress-label]');
  const source = new EventSource(`/console/jobs/${id}/events`);
  const update = (e) => {
    const job = JSON.parse(e.data);
    if (bar) bar.value = job.progress;
    if (label) label.textContent = `${job.progress}%`;
    if (job.state !== shown) {
      source.close();
      window.location.reload();
    }
  };
  source.addEventListener('state', update);
  source.addEventListener('progress', update);
});
