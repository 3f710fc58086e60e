// pipectl ui: live updates. The pages read without this script; it only keeps an open page
// current while a run goes on, without a reload:
// - a page whose #live element has data-events (a run, or a step of a run, still going on)
//   listens to the run's server-sent events (/api/runs/ID/events); each event carries the run's
//   status and its steps' statuses: the status badges are set at once, then the page is read
//   again and its regions marked data-live-region are replaced by the server's rendering of
//   them (the DAG's colours, the timeline, the step table, the errors);
// - the runs page listens to the events of the running runs it lists (at most four) and sets
//   their status badges, then reads the list again when one ends.
// Nothing here builds HTML from data: text goes in with textContent, markup only as the
// server rendered (and escaped) it.
(function () {
  "use strict";

  var STATUS_CLASS = /(^|\s)s-[a-z_]+/g;

  function setStatus(element, status) {
    element.textContent = status;
    element.className = element.className.replace(STATUS_CLASS, "") + " s-" + status;
  }

  function setRunStatus(runId, status) {
    var badges = document.querySelectorAll("[data-run-status]");
    for (var i = 0; i < badges.length; i++) {
      if (badges[i].getAttribute("data-run-status") === runId) setStatus(badges[i], status);
    }
  }

  function liveState(text) {
    var element = document.getElementById("live-state");
    if (!element) return;
    element.textContent = text;
    element.hidden = !text;
  }

  // Read the page again and replace its live regions by the new ones.
  var refreshing = false;
  var again = false;

  function refresh(done) {
    if (refreshing) {
      again = true;
      return;
    }
    refreshing = true;
    fetch(window.location.href, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.text();
      })
      .then(function (text) {
        var fresh = new DOMParser().parseFromString(text, "text/html");
        var regions = document.querySelectorAll("[data-live-region]");
        for (var i = 0; i < regions.length; i++) {
          var id = regions[i].id;
          var replacement = id && fresh.getElementById(id);
          if (replacement) regions[i].replaceWith(document.adoptNode(replacement));
        }
        if (done) done(fresh);
      })
      .catch(function () {})
      .then(function () {
        refreshing = false;
        if (again) {
          again = false;
          refresh(done);
        }
      });
  }

  function follow(url, onState, onEnd) {
    if (!window.EventSource) return null;
    var source = new EventSource(url);
    source.addEventListener("state", function (event) {
      var state;
      try {
        state = JSON.parse(event.data);
      } catch (e) {
        return;
      }
      onState(state);
    });
    source.addEventListener("end", function () {
      source.close();
      onEnd();
    });
    return source;
  }

  function runPage(live) {
    var url = live.getAttribute("data-events");
    liveState("live");
    follow(
      url,
      function (state) {
        setRunStatus(state.run_id, state.status);
        refresh();
      },
      function () {
        liveState("");
        refresh();
      }
    );
  }

  function runsPage(region) {
    var ids = (region.getAttribute("data-live-runs") || "").split(" ");
    var open = 0;
    ids.forEach(function (id) {
      if (!id) return;
      open++;
      follow(
        "/api/runs/" + encodeURIComponent(id) + "/events",
        function (state) {
          setRunStatus(state.run_id, state.status);
        },
        function () {
          open--;
          refresh();
        }
      );
    });
    if (open) liveState("live");
  }

  function start() {
    var live = document.getElementById("live");
    if (live && live.getAttribute("data-events")) runPage(live);
    var runs = document.getElementById("runs");
    if (runs && runs.getAttribute("data-live-runs")) runsPage(runs);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
