// cxpulse live page: polls api/series and draws one of three views plus the
// pipeline's health. No library, nothing fetched but api/series.
// The DOM contract (data-key, data-value, data-empty, body data-state, ...)
// is described in docs/live-page.md; the browser test reads it.
(function () {
  'use strict';

  var VIEWS = ['support', 'growth', 'retention'];
  var PRIORITIES = ['urgent', 'high', 'normal', 'low'];
  var OUTCOMES = ['applied', 'invalid', 'late', 'duplicate'];
  var HISTORY_POINTS = 180;
  var SPARK_MIN = 24;

  var body = document.body;
  var params = new URLSearchParams(window.location.search);
  var refreshSeconds = Number(params.get('refresh'));
  if (!(refreshSeconds >= 0.5 && refreshSeconds <= 3600)) {
    refreshSeconds = 5;
  }

  var st = {
    view: VIEWS.indexOf(params.get('view')) >= 0 ? params.get('view') : 'support',
    window: params.get('window') || '',
    data: null, // the indexed last answer
    prev: null, // the one before, for rates
    history: new Map(), // key -> {seq, pts}: sparklines
    seq: 0, // answers of api/series so far
    timer: null
  };

  // ---------- formatting ----------

  function finite(v) {
    return typeof v === 'number' && isFinite(v);
  }

  function trimZero(s) {
    return s.indexOf('.') >= 0 ? s.replace(/\.?0+$/, '') : s;
  }

  function pad2(n) {
    return n < 10 ? '0' + n : String(n);
  }

  var FMT = {
    count: function (v) {
      if (Number.isInteger(v)) {
        return v.toLocaleString('en-US');
      }
      return v.toLocaleString('en-US', { maximumFractionDigits: 2 });
    },
    ratio: function (v) {
      var x = v * 100;
      if (x !== 0 && Math.abs(x) < 0.05) {
        return (x < 0 ? '>-' : '<') + '0.1%';
      }
      var s = Math.abs(x) >= 99.95 || Math.abs(x) < 0.05 ? x.toFixed(0) : x.toFixed(1);
      return trimZero(s) + '%';
    },
    usd: function (v) {
      var a = Math.abs(v);
      var digits = a >= 1000 ? 0 : 2;
      var s = a.toLocaleString('en-US', {
        minimumFractionDigits: digits,
        maximumFractionDigits: digits
      });
      return (v < 0 ? '-$' : '$') + s;
    },
    seconds: function (v) {
      var a = Math.abs(v);
      var sign = v < 0 ? '-' : '';
      if (a < 1) {
        return sign + Math.round(a * 1000) + ' ms';
      }
      if (a < 10) {
        return sign + trimZero(a.toFixed(1)) + 's';
      }
      var t = Math.round(a);
      if (t < 60) {
        return sign + t + 's';
      }
      // Two units, the second dropped when zero: 4m 05s, 15m, 3h 07m, 2d.
      function two(big, bigUnit, small, smallUnit) {
        return sign + big + bigUnit + (small ? ' ' + pad2(small) + smallUnit : '');
      }
      if (t < 3600) {
        return two(Math.floor(t / 60), 'm', t % 60, 's');
      }
      if (t < 86400) {
        return two(Math.floor(t / 3600), 'h', Math.floor((t % 3600) / 60), 'm');
      }
      return two(Math.floor(t / 86400), 'd', Math.floor((t % 86400) / 3600), 'h');
    },
    nps: function (v) {
      var s = trimZero(v.toFixed(1));
      return v > 0 ? '+' + s : s;
    },
    score: function (v) {
      return v.toFixed(2);
    },
    factor: function (v) {
      return v >= 10 ? v.toFixed(1) : v.toFixed(3);
    },
    rate: function (v) {
      if (v === 0) {
        return '0/s';
      }
      if (Math.abs(v) < 10) {
        return trimZero(v.toFixed(2)) + '/s';
      }
      return Math.round(v).toLocaleString('en-US') + '/s';
    }
  };

  function format(kind, v) {
    if (!finite(v)) {
      return 'no value';
    }
    var f = FMT[kind] || FMT.count;
    var s = f(v);
    // Belt and braces: never show these words.
    return /NaN|undefined|Infinity/.test(s) ? 'no value' : s;
  }

  // Durations of window labels (`1h`, `24h`, `7d`, `30d`, `90m`, `45s`).
  function windowSeconds(w) {
    var m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d|w)$/.exec(w || '');
    if (!m) {
      return Number.MAX_VALUE;
    }
    var unit = { ms: 0.001, s: 1, m: 60, h: 3600, d: 86400, w: 604800 }[m[2]];
    return Number(m[1]) * unit;
  }

  // ---------- series lookup ----------

  function esc(v) {
    return String(v).replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
  }

  // The same key as the server's export::series_key: name{k="v",...}, labels sorted.
  function seriesKey(name, labels) {
    var ks = Object.keys(labels).sort();
    return name + '{' + ks.map(function (k) {
      return k + '="' + esc(labels[k]) + '"';
    }).join(',') + '}';
  }

  function indexData(d) {
    if (!d || !Array.isArray(d.series) || !Array.isArray(d.absent) || !Array.isArray(d.pipeline)) {
      throw new Error('unexpected answer from api/series (no series, absent or pipeline list)');
    }
    var x = {
      raw: d,
      values: new Map(),
      absent: new Set(),
      byName: new Map(),
      pipeline: new Map(), // name -> [{labels, value}]
      windows: new Set()
    };
    function add(s, hasValue) {
      if (hasValue) {
        x.values.set(s.key, s.value);
      } else {
        x.absent.add(s.key);
      }
      var list = x.byName.get(s.name);
      if (!list) {
        list = [];
        x.byName.set(s.name, list);
      }
      list.push(s);
      if (s.labels && typeof s.labels.window === 'string') {
        x.windows.add(s.labels.window);
      }
    }
    d.series.forEach(function (s) {
      if (finite(s.value)) {
        add(s, true);
      }
    });
    d.absent.forEach(function (s) {
      add(s, false);
    });
    d.pipeline.forEach(function (s) {
      if (!finite(s.value)) {
        return;
      }
      var list = x.pipeline.get(s.name);
      if (!list) {
        list = [];
        x.pipeline.set(s.name, list);
      }
      list.push(s);
    });
    return x;
  }

  // Label values of `label` among the series called `name` (matching `where`).
  function labelValues(name, label, where) {
    var out = [];
    var list = st.data.byName.get(name) || [];
    list.forEach(function (s) {
      var ok = Object.keys(where || {}).every(function (k) {
        return s.labels[k] === where[k];
      });
      var v = s.labels[label];
      if (ok && typeof v === 'string' && out.indexOf(v) < 0) {
        out.push(v);
      }
    });
    return out;
  }

  function lookup(name, labels) {
    var k = seriesKey(name, labels);
    if (st.data.values.has(k)) {
      return { key: k, value: st.data.values.get(k) };
    }
    return { key: k, value: null, absent: st.data.absent.has(k) };
  }

  // Sum of the series `name` whose labels match `where` (null when none).
  function sum(name, where, data) {
    var x = data || st.data;
    var list = x.byName.get(name) || [];
    var total = null;
    list.forEach(function (s) {
      var ok = Object.keys(where || {}).every(function (k) {
        return s.labels[k] === where[k];
      });
      if (ok && x.values.has(s.key)) {
        total = (total || 0) + s.value;
      }
    });
    return total;
  }

  // ---------- empty states ----------

  function absentReason(name, l) {
    var w = l.window ? ' in ' + l.window : '';
    if (/^cxpulse_csat_ratio/.test(name)) return 'no CSAT answers' + w;
    if (/^cxpulse_nps/.test(name)) return 'no NPS answers' + w;
    if (/^cxpulse_ces_/.test(name)) return 'no CES answers' + w;
    if (name === 'cxpulse_support_first_response_quantile_seconds') return 'no first responses' + w;
    if (name === 'cxpulse_support_resolution_quantile_seconds') return 'no resolutions' + w;
    if (name === 'cxpulse_sla_breach_ratio') return 'no SLA decided' + w;
    if (name === 'cxpulse_cpa_usd') return 'no acquisitions' + w;
    if (name === 'cxpulse_conversion_ratio') return 'no signups' + w;
    if (name === 'cxpulse_channel_share_ratio') return 'no signups' + w;
    if (name === 'cxpulse_referral_signup_share_ratio') return 'no signups' + w;
    if (name === 'cxpulse_referral_invite_conversion_ratio') return 'no invites' + w;
    if (name === 'cxpulse_referral_k_factor') return 'no active customers' + w;
    if (name === 'cxpulse_arpu_usd') return 'no active customers' + w;
    if (name === 'cxpulse_clv_usd') return 'no active customers in 30d';
    if (name === 'cxpulse_user_growth_ratio') return 'no users yet';
    if (name === 'cxpulse_churn_ratio') return 'no active customers at the start of' + w.replace(' in', '');
    if (name === 'cxpulse_post_support_churn_ratio') {
      return 'no ' + (l.experience || '') + ' CSAT answers old enough to judge';
    }
    if (name === 'cxpulse_retention_ratio') return 'no active users in the ' + (l.window || 'window') + ' before';
    if (name === 'cxpulse_cohort_retention_ratio') {
      return 'no signups ' + l.day + ' to ' + (Number(l.day) + 1) + ' days ago';
    }
    return 'no data' + w;
  }

  function missingReason(name, l) {
    if (name === 'cxpulse_retention_ratio' && l.window && windowSeconds(l.window) % 86400 !== 0) {
      return 'only for whole-day windows';
    }
    if (name === 'cxpulse_clv_usd') return 'needs the 30d window';
    return l.window ? 'no data in ' + l.window : 'no data yet';
  }

  // ---------- DOM helpers ----------

  function h(tag, attrs, children) {
    var el = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === 'class') {
        el.className = attrs[k];
      } else if (k === 'text') {
        el.textContent = attrs[k];
      } else {
        el.setAttribute(k, attrs[k]);
      }
    });
    (children || []).forEach(function (c) {
      if (c === null || c === undefined) {
        return;
      }
      el.appendChild(typeof c === 'string' ? document.createTextNode(c) : c);
    });
    return el;
  }

  // The element of one series: data-key always; data-value and the
  // formatted value, or data-empty and the reason.
  function val(name, labels, kind, cls) {
    var r = lookup(name, labels);
    var el = h('span', { class: 'v' + (cls ? ' ' + cls : '') });
    el.dataset.key = r.key;
    if (finite(r.value)) {
      el.dataset.value = String(r.value);
      el.textContent = format(kind, r.value);
    } else {
      var why = r.absent ? absentReason(name, labels) : missingReason(name, labels);
      el.dataset.empty = why;
      el.textContent = why;
      el.classList.add('empty');
    }
    return el;
  }

  // A number computed here (a sum, a rate): data-key names how.
  function derived(key, v, kind, emptyWhy, cls) {
    var el = h('span', { class: 'v derived' + (cls ? ' ' + cls : '') });
    el.dataset.key = key;
    if (finite(v)) {
      el.dataset.value = String(v);
      el.textContent = format(kind, v);
    } else {
      el.dataset.empty = emptyWhy;
      el.textContent = emptyWhy;
      el.classList.add('empty');
    }
    return el;
  }

  // One point per answer of api/series (a redraw for a view or window
  // change adds none).
  function remember(key, v) {
    if (!finite(v)) {
      return;
    }
    var hist = st.history.get(key);
    if (!hist) {
      hist = { seq: -1, pts: [] };
      st.history.set(key, hist);
    }
    if (hist.seq === st.seq) {
      return;
    }
    hist.seq = st.seq;
    hist.pts.push(v);
    if (hist.pts.length > HISTORY_POINTS) {
      hist.pts.shift();
    }
  }

  var SVG = 'http://www.w3.org/2000/svg';

  // Sparkline of a key's history (kept in the page since it was opened).
  function spark(key) {
    var pts = st.history.has(key) ? st.history.get(key).pts : [];
    var w = 240;
    var ht = 48;
    var svg = document.createElementNS(SVG, 'svg');
    svg.setAttribute('class', 'spark');
    svg.setAttribute('viewBox', '0 0 ' + w + ' ' + ht);
    svg.setAttribute('preserveAspectRatio', 'none');
    svg.setAttribute('aria-hidden', 'true');
    if (pts.length < 2) {
      var base = document.createElementNS(SVG, 'line');
      base.setAttribute('x1', '0');
      base.setAttribute('x2', String(w));
      base.setAttribute('y1', String(ht - 2));
      base.setAttribute('y2', String(ht - 2));
      base.setAttribute('class', 'spark-base');
      svg.appendChild(base);
      return svg;
    }
    var lo = Math.min.apply(null, pts);
    var hi = Math.max.apply(null, pts);
    var span = hi - lo;
    // The line grows from the right until SPARK_MIN points, then fills the width.
    var step = w / (Math.max(pts.length, SPARK_MIN) - 1);
    var x0 = w - step * (pts.length - 1);
    var coords = pts.map(function (v, i) {
      var x = x0 + i * step;
      var y = span > 0 ? ht - 4 - ((v - lo) / span) * (ht - 8) : ht / 2;
      return x.toFixed(1) + ',' + y.toFixed(1);
    });
    var line = document.createElementNS(SVG, 'polyline');
    line.setAttribute('points', coords.join(' '));
    line.setAttribute('class', 'spark-line');
    svg.appendChild(line);
    return svg;
  }

  function tile(title, main, rows, sparkKey, cls) {
    // A long number gets a smaller size rather than being cut.
    var long = !isEmptyish(main) && main.textContent.length > 7;
    return h('section', { class: 'tile' + (cls ? ' ' + cls : '') }, [
      h('h2', { text: title }),
      h('div', { class: 'big' + (long ? ' long' : '') }, [main]),
      rows && rows.length ? h('div', { class: 'sub' }, rows) : null,
      sparkKey ? spark(sparkKey) : null
    ]);
  }

  function isEmpty(el) {
    return el.dataset.empty !== undefined;
  }

  function isEmptyish(el) {
    return !el.dataset || isEmpty(el) || el.dataset.value === undefined;
  }

  // `a / b`; when both are empty for the same reason the reason is shown
  // once (the second element stays in the DOM, visually hidden).
  function both(a, b, sepText) {
    var sep = h('span', { class: 'muted sep', text: sepText || ' / ' });
    if (isEmpty(a) && a.dataset.empty === b.dataset.empty) {
      sep.classList.add('sr');
      b.classList.add('sr');
    }
    return [a, sep, b];
  }

  // A labelled line under a tile's big number.
  function kv(label, els) {
    return h('div', { class: 'kv' }, [h('span', { class: 'k', text: label }), h('span', { class: 'kvv' }, els)]);
  }

  // Hides a line whose values are all empty for the reason the tile's big
  // number already says (they stay in the DOM).
  function quiet(row, main) {
    var vs = row.querySelectorAll('.v');
    var same = vs.length > 0 && isEmpty(main) && Array.prototype.every.call(vs, function (v) {
      return v.dataset.empty === main.dataset.empty;
    });
    if (same) {
      row.classList.add('sr');
    }
    return row;
  }

  function interval(name, labels, kind, main) {
    return quiet(kv('95% interval', both(val(name + '_ci_lower', labels, kind), val(name + '_ci_upper', labels, kind),
      ' \u2013 ')), main);
  }

  // Two or three labelled big numbers side by side.
  function split(parts) {
    return h('div', { class: 'split' + (parts.length > 2 ? ' three' : '') }, parts.map(function (p) {
      return h('div', { class: 'part' }, [h('div', { class: 'label', text: p[0] }), p[1]]);
    }));
  }

  function cap(s) {
    return s.charAt(0).toUpperCase() + s.slice(1);
  }

  // Adds a class to a value element by a rule on its value.
  function mark(el, cls, when) {
    var v = Number(el.dataset.value);
    if (el.dataset.value !== undefined && when(v)) {
      el.classList.add(cls);
    }
    return el;
  }

  function positive(v) {
    return v > 0;
  }

  // ---------- views ----------

  function supportView(w) {
    var wl = { window: w };
    var root = h('div', { class: 'view support' });
    var noTickets = 'no ticket data yet';
    var open = sum('cxpulse_support_open_tickets', {});
    var openKey = 'sum(cxpulse_support_open_tickets)';
    remember(openKey, open);
    function total(name, kind, cls) {
      var k = 'sum(' + name + '{kind="' + kind + '"})';
      var v = sum(name, { kind: kind });
      remember(k, v);
      return mark(derived(k, v, 'count', noTickets), cls, positive);
    }
    var csat = mark(val('cxpulse_csat_ratio', wl, 'ratio'), 'bad', function (v) { return v < 0.7; });
    var openedKey = 'sum(cxpulse_support_tickets_opened{window="' + w + '"})';
    root.appendChild(h('div', { class: 'tiles' }, [
      tile('Open tickets', derived(openKey, open, 'count', noTickets), [
        kv('opened in ' + w, [derived(openedKey, sum('cxpulse_support_tickets_opened', wl), 'count',
          'no data in ' + w)]),
        kv('reopened in ' + w, [val('cxpulse_support_reopened', wl, 'count')])
      ], openKey),
      tile('Breaching now', split([
        ['no first reply', total('cxpulse_support_open_tickets_breaching', 'first_response', 'bad')],
        ['not resolved', total('cxpulse_support_open_tickets_breaching', 'resolution', 'bad')]
      ]), [h('div', { class: 'muted note', text: 'open tickets past their SLA deadline' })],
      'sum(cxpulse_support_open_tickets_breaching{kind="first_response"})', 'alert'),
      tile('At risk', split([
        ['first reply', total('cxpulse_support_tickets_at_risk', 'first_response', 'warn')],
        ['resolution', total('cxpulse_support_tickets_at_risk', 'resolution', 'warn')]
      ]), [h('div', { class: 'muted note', text: 'undecided, over ' +
        format('ratio', (st.data.raw.sla && st.data.raw.sla.at_risk_share) || 0.8) + ' of the target used' })],
      'sum(cxpulse_support_tickets_at_risk{kind="first_response"})'),
      tile('CSAT ' + w, csat, [
        interval('cxpulse_csat_ratio', wl, 'ratio', csat),
        kv('answers', [val('cxpulse_csat_responses', wl, 'count')])
      ], seriesKey('cxpulse_csat_ratio', wl))
    ]));

    var sla = (st.data.raw.sla && st.data.raw.sla.targets) || {};
    var head = h('tr', {}, [
      h('th', { text: 'Priority' }),
      h('th', { text: 'Open' }),
      h('th', { text: 'Breaching' }),
      h('th', { text: 'At risk' }),
      h('th', { class: 'group', text: 'First response ' + w }),
      h('th', { class: 'group', text: 'Resolution ' + w }),
      h('th', { class: 'group', text: 'Breach ratio ' + w })
    ]);
    var sub = h('tr', { class: 'subhead' }, [
      h('th', {}), h('th', {}),
      h('th', { text: 'reply / resolve' }),
      h('th', { text: 'reply / resolve' }),
      h('th', { class: 'group', text: 'p50 / p90 (target)' }),
      h('th', { class: 'group', text: 'p50 / p90 (target)' }),
      h('th', { class: 'group', text: 'reply / resolve' })
    ]);
    var rows = PRIORITIES.map(function (p) {
      var t = sla[p] || {};
      function q(kind, quantile, target) {
        var el = val('cxpulse_support_' + kind + '_quantile_seconds', { window: w, priority: p, quantile: quantile },
          'seconds');
        if (finite(target)) {
          mark(el, quantile === '0.9' ? 'bad' : 'warn', function (v) { return v > target; });
        }
        return el;
      }
      function quant(kind, target) {
        return h('td', { class: 'group' }, both(q(kind, '0.5', target), q(kind, '0.9', target)).concat([
          h('div', { class: 'target' }, [
            h('span', { class: 'muted', text: 'target ' }),
            finite(target) ? derived('sla.targets.' + p + '.' + kind + '_seconds', target, 'seconds', '')
              : h('span', { class: 'muted', text: 'not configured' })
          ])
        ]));
      }
      function pair(name, cls, kind, window, good) {
        function one(k) {
          var l = { priority: p, kind: k };
          if (window) l.window = window;
          return mark(val(name, l, kind || 'count'), cls, good || positive);
        }
        return both(one('first_response'), one('resolution'));
      }
      return h('tr', { class: 'prio-' + p }, [
        h('th', { class: 'prio', text: cap(p) }),
        h('td', {}, [val('cxpulse_support_open_tickets', { priority: p }, 'count', 'strong')]),
        h('td', {}, pair('cxpulse_support_open_tickets_breaching', 'bad')),
        h('td', {}, pair('cxpulse_support_tickets_at_risk', 'warn')),
        quant('first_response', t.first_response_seconds),
        quant('resolution', t.resolution_seconds),
        h('td', { class: 'group' }, pair('cxpulse_sla_breach_ratio', 'bad', 'ratio', w,
          function (v) { return v > 0.1; }))
      ]);
    });
    root.appendChild(h('table', { class: 'grid support-grid' }, [h('thead', {}, [head, sub]), h('tbody', {}, rows)]));
    return root;
  }

  function channelsOf(w) {
    var chans = labelValues('cxpulse_signups', 'channel', { window: w });
    labelValues('cxpulse_marketing_spend_usd', 'channel', { window: w }).forEach(function (c) {
      if (chans.indexOf(c) < 0) chans.push(c);
    });
    function n(c) {
      var r = lookup('cxpulse_signups', { window: w, channel: c });
      return finite(r.value) ? r.value : -1;
    }
    return chans.sort(function (a, b) {
      return n(b) - n(a) || (a < b ? -1 : 1);
    });
  }

  function growthView(w) {
    var wl = { window: w };
    var root = h('div', { class: 'view growth' });
    var none = 'no data in ' + w;
    function total(name) {
      var k = 'sum(' + name + '{window="' + w + '"})';
      var v = sum(name, wl);
      remember(k, v);
      return { key: k, v: v };
    }
    var signups = total('cxpulse_signups');
    var spend = total('cxpulse_marketing_spend_usd');
    var acq = total('cxpulse_acquisitions');
    var revenue = total('cxpulse_revenue_usd');
    var cpaKey = 'sum(cxpulse_marketing_spend_usd{window="' + w + '"}) / sum(cxpulse_acquisitions{window="' + w + '"})';
    var kf = val('cxpulse_referral_k_factor', wl, 'factor');
    root.appendChild(h('div', { class: 'tiles' }, [
      tile('Signups ' + w, derived(signups.key, signups.v, 'count', none), [
        kv('users in all', [val('cxpulse_users', {}, 'count')])
      ], signups.key),
      tile('User growth ' + w, val('cxpulse_user_growth_ratio', wl, 'ratio'), [
        h('div', { class: 'muted note', text: 'signups in ' + w + ' over all users' })
      ], seriesKey('cxpulse_user_growth_ratio', wl)),
      tile('CPA ' + w, derived(cpaKey, acq.v > 0 ? spend.v / acq.v : null, 'usd',
        acq.v === null ? none : 'no acquisitions in ' + w), [
        kv('spend', [derived(spend.key, spend.v, 'usd', none)]),
        kv('first deposits', [derived(acq.key, acq.v, 'count', none)])
      ]),
      tile('K-factor ' + w, kf, [
        kv('signups referred', [val('cxpulse_referral_signup_share_ratio', wl, 'ratio')]),
        kv('invites converting', [val('cxpulse_referral_invite_conversion_ratio', wl, 'ratio')])
      ], seriesKey('cxpulse_referral_k_factor', wl)),
      tile('Revenue ' + w, derived(revenue.key, revenue.v, 'usd', none), [
        kv('active customers', [derived('sum(cxpulse_active_customers{window="' + w + '"})',
          sum('cxpulse_active_customers', wl), 'count', none)])
      ], revenue.key)
    ]));

    var chans = channelsOf(w);
    if (chans.length === 0) {
      root.appendChild(h('p', { class: 'placeholder', text: 'No channels yet: no signups or spend in ' + w + '.' }));
      return root;
    }
    var head = h('tr', {}, [
      h('th', { text: 'Channel' }),
      h('th', { text: 'Signups' }),
      h('th', { text: 'Share' }),
      h('th', { text: 'Spend' }),
      h('th', { text: 'Acquired' }),
      h('th', { text: 'CPA' }),
      h('th', { class: 'group funnel', text: 'Funnel: signup \u2192 first deposit \u2192 first trade' }),
      h('th', { class: 'group', text: 'Revenue' }),
      h('th', { text: 'CLV' })
    ]);
    var rows = chans.map(function (c) {
      var cl = { window: w, channel: c };
      function stage(s) {
        var users = val('cxpulse_funnel_users', { window: w, channel: c, stage: s }, 'count');
        var parts = [users];
        var frac = users.dataset.value !== undefined && Number(users.dataset.value) > 0 ? 1 : 0;
        if (s !== 'signup') {
          var ratio = val('cxpulse_conversion_ratio', { window: w, channel: c, stage: s }, 'ratio', 'conv');
          frac = ratio.dataset.value !== undefined ? Math.max(0, Math.min(1, Number(ratio.dataset.value))) : 0;
          if (isEmpty(ratio)) {
            // No signups: the signup stage's 0 already says it (and no
            // empty "()" around the hidden reason).
            ratio.classList.add('sr');
            parts = [users, ratio];
          } else {
            parts = [users, h('span', { class: 'muted', text: ' (' }), ratio, h('span', { class: 'muted', text: ')' })];
          }
        }
        var bar = h('div', { class: 'bar' });
        bar.style.width = (frac * 100).toFixed(1) + '%';
        return h('div', { class: 'stage' }, [bar, h('span', { class: 'stage-v' }, parts)]);
      }
      return h('tr', {}, [
        h('th', { text: c }),
        h('td', {}, [val('cxpulse_signups', cl, 'count', 'strong')]),
        h('td', {}, [val('cxpulse_channel_share_ratio', cl, 'ratio')]),
        h('td', {}, [val('cxpulse_marketing_spend_usd', cl, 'usd')]),
        h('td', {}, [val('cxpulse_acquisitions', cl, 'count')]),
        h('td', {}, [val('cxpulse_cpa_usd', cl, 'usd')]),
        h('td', { class: 'group funnel' }, [h('div', { class: 'stages' }, [
          stage('signup'),
          h('span', { class: 'arrow', text: '\u2192' }),
          stage('first_deposit'),
          h('span', { class: 'arrow', text: '\u2192' }),
          stage('first_trade')
        ])]),
        h('td', { class: 'group' }, [val('cxpulse_revenue_usd', cl, 'usd')]),
        h('td', {}, [val('cxpulse_clv_usd', { channel: c }, 'usd')])
      ]);
    });
    root.appendChild(h('table', { class: 'grid growth-grid' }, [h('thead', {}, [head]), h('tbody', {}, rows)]));
    return root;
  }

  function cohortTile() {
    var days = ['1', '7', '30'];
    var els = days.map(function (d) {
      return val('cxpulse_cohort_retention_ratio', { day: d }, 'ratio');
    });
    var main = split(days.map(function (d, i) {
      return ['D' + d, els[i]];
    }));
    var rows = [h('div', { class: 'muted note', text: 'of a day\'s signups, active on day N' })];
    if (els.every(isEmpty)) {
      // Three narrow columns of reasons read badly: one line says it.
      main.classList.add('sr');
      main = h('div', {}, [h('span', { class: 'v-note', text: 'no signups 1, 7 or 30 days ago yet' }), main]);
    }
    return tile('Cohort retention', main, rows);
  }

  function retentionView(w) {
    var wl = { window: w };
    var root = h('div', { class: 'view retention' });
    var churn = mark(val('cxpulse_churn_ratio', wl, 'ratio'), 'bad', function (v) { return v > 0.05; });
    var nps = val('cxpulse_nps', wl, 'nps');
    var ces = val('cxpulse_ces_mean', wl, 'score');
    var easy = val('cxpulse_ces_easy_ratio', wl, 'ratio');
    var csat = val('cxpulse_csat_ratio', wl, 'ratio');
    root.appendChild(h('div', { class: 'tiles' }, [
      tile('Churn ' + w, churn, [
        kv('churned', [val('cxpulse_churned_customers', wl, 'count')]),
        kv('came back', [val('cxpulse_reactivated_customers', wl, 'count')]),
        kv('new customers', [val('cxpulse_new_customers', wl, 'count')]),
        kv('active now', [val('cxpulse_active_customers_now', {}, 'count')])
      ], seriesKey('cxpulse_churn_ratio', wl)),
      tile('Churn after a support contact ' + w, split([
        ['after a bad one (CSAT \u2264 2)', mark(val('cxpulse_post_support_churn_ratio',
          { window: w, experience: 'negative' }, 'ratio'), 'bad', function (v) { return v > 0.2; })],
        ['after a good one (CSAT \u2265 4)', val('cxpulse_post_support_churn_ratio',
          { window: w, experience: 'positive' }, 'ratio')]
      ]), [h('div', { class: 'muted note',
        text: 'share of rated contacts whose customer then had no activity for the churn period' })], null, 'wide'),
      tile('Retention ' + w, val('cxpulse_retention_ratio', wl, 'ratio'), [
        h('div', { class: 'muted note', text: windowSeconds(w) % 86400 === 0
          ? 'of the customers active in the ' + w + ' before, the share active again in the last ' + w +
            ' (whole UTC days)'
          : 'computed for whole-day windows (24h, 7d, 30d)' })
      ], seriesKey('cxpulse_retention_ratio', wl)),
      cohortTile(),
      tile('NPS ' + w, nps, [
        interval('cxpulse_nps', wl, 'nps', nps),
        kv('promoters / passives / detractors', ['promoter', 'passive', 'detractor'].map(function (c, i) {
          return h('span', {}, [i ? h('span', { class: 'muted', text: ' / ' }) : null,
            val('cxpulse_nps_responses', { window: w, category: c }, 'count')]);
        }))
      ], seriesKey('cxpulse_nps', wl)),
      tile('CES ' + w + ' (1-7, 7 easiest)', ces, [
        quiet(kv('easy (5-7)', [easy]), ces),
        interval('cxpulse_ces_easy_ratio', wl, 'ratio', ces),
        kv('answers', [val('cxpulse_ces_responses', wl, 'count')])
      ], seriesKey('cxpulse_ces_mean', wl)),
      tile('CSAT ' + w, csat, [
        interval('cxpulse_csat_ratio', wl, 'ratio', csat),
        kv('answers', [val('cxpulse_csat_responses', wl, 'count')])
      ], seriesKey('cxpulse_csat_ratio', wl))
    ]));
    return root;
  }

  // ---------- health corner ----------

  function pipelineSum(name, where, data) {
    var list = (data || st.data).pipeline.get(name);
    if (!list || list.length === 0) {
      return null;
    }
    var total = 0;
    list.forEach(function (s) {
      var ok = Object.keys(where || {}).every(function (k) {
        return s.labels[k] === where[k];
      });
      if (ok) total += s.value;
    });
    return total;
  }

  // A per-second rate of a counter between the last two answers.
  function rate(now, before, seconds) {
    if (!st.prev) {
      return { v: null, why: 'needs two refreshes' };
    }
    if (!(seconds > 0)) {
      return { v: null, why: 'no time between refreshes' };
    }
    now = now || 0;
    before = before || 0;
    if (now < before) {
      return { v: null, why: 'counter reset' };
    }
    return { v: (now - before) / seconds, why: '' };
  }

  function health() {
    var d = st.data;
    var p = st.prev;
    var dt = p ? d.raw.wall_seconds - p.raw.wall_seconds : null;
    var box = document.getElementById('health');
    var lag = pipelineSum('cxpulse_consumer_lag', {});
    var line1 = [h('span', { class: 'hitem' }, [h('span', { class: 'hl', text: 'lag ' }),
      mark(derived('sum(cxpulse_consumer_lag)', lag, 'count', 'no partitions assigned'), 'warn',
        function (v) { return v > 1000; })])];
    var events = [h('span', { class: 'hl', text: 'events/s ' })];
    OUTCOMES.forEach(function (o, i) {
      var r = rate(sum('cxpulse_events_total', { outcome: o }),
        p ? sum('cxpulse_events_total', { outcome: o }, p) : null, dt);
      var el = derived('rate(cxpulse_events_total{outcome="' + o + '"})', r.v, 'rate', r.why);
      if (o !== 'applied') mark(el, 'warn', function (v) { return v > 0; });
      var label = h('span', { class: 'hl', text: (i ? ' \u00b7 ' : '') + o + ' ' });
      if (!p) {
        // One "needs two refreshes" says it for all.
        label.classList.add('sr');
        if (i > 0) el.classList.add('sr');
      }
      events.push(label, el);
    });
    line1.push(h('span', { class: 'hitem' }, events));
    var dl = rate(pipelineSum('cxpulse_dead_letter_records_total', {}),
      p ? pipelineSum('cxpulse_dead_letter_records_total', {}, p) : null, dt);
    var dlItem = h('span', { class: 'hitem' + (p ? '' : ' sr') }, [
      h('span', { class: 'hl', text: 'dead letters/s ' }),
      mark(derived('rate(cxpulse_dead_letter_records_total)', dl.v, 'rate', dl.why), 'warn',
        function (v) { return v > 0; })]);
    line1.push(dlItem);
    var clock = d.raw.clock_seconds;
    var behind = finite(clock) && finite(d.raw.wall_seconds)
      ? Math.round((d.raw.wall_seconds - clock) * 1000) / 1000 : null;
    var skew = derived('wall_seconds - clock_seconds', behind, 'seconds', 'no events yet');
    skew.id = 'clock-skew';
    mark(skew, 'warn', function (v) { return Math.abs(v) > 60; });
    var ready = h('span', { id: 'ready', class: d.raw.ready ? 'ok' : 'bad' });
    ready.dataset.ready = d.raw.ready ? 'true' : 'false';
    ready.textContent = d.raw.ready ? 'ready' : 'not ready: ' + (d.raw.ready_reason || 'no reason given');
    var line2 = [
      h('span', { class: 'hitem' }, [h('span', { class: 'hl', text: 'T behind wall clock ' }), skew]),
      h('span', { class: 'hitem' }, [ready])
    ];
    box.replaceChildren(h('div', { class: 'hline' }, line1), h('div', { class: 'hline' }, line2));
  }

  // ---------- page ----------

  function windows() {
    return Array.from(st.data.windows).sort(function (a, b) {
      return windowSeconds(a) - windowSeconds(b) || (a < b ? -1 : 1);
    });
  }

  function chooseWindow() {
    var ws = windows();
    if (ws.indexOf(st.window) >= 0) {
      return st.window;
    }
    if (ws.indexOf('24h') >= 0) {
      return '24h';
    }
    return ws.length ? ws[0] : '';
  }

  function syncUrl() {
    var q = new URLSearchParams(window.location.search);
    q.set('view', st.view);
    if (st.window) {
      q.set('window', st.window);
    }
    window.history.replaceState(null, '', '?' + q.toString());
  }

  function renderNav() {
    Array.prototype.forEach.call(document.querySelectorAll('#nav a'), function (a) {
      var q = new URLSearchParams(window.location.search);
      q.set('view', a.dataset.view);
      a.setAttribute('href', '?' + q.toString());
      if (a.dataset.view === st.view) {
        a.setAttribute('aria-current', 'page');
      } else {
        a.removeAttribute('aria-current');
      }
    });
    var sel = document.getElementById('window');
    var ws = windows();
    var same = sel.options.length === ws.length && ws.every(function (w, i) {
      return sel.options[i].value === w;
    });
    if (!same) {
      sel.replaceChildren.apply(sel, ws.map(function (w) {
        return h('option', { value: w, text: w });
      }));
    }
    sel.value = st.window;
  }

  function render() {
    if (!st.data) {
      return;
    }
    st.window = chooseWindow();
    body.dataset.view = st.view;
    body.dataset.window = st.window;
    document.title = 'cxpulse \u00b7 ' + { support: 'Support', growth: 'Growth', retention: 'Retention & CX' }[st.view] +
      (st.window ? ' ' + st.window : '');
    syncUrl();
    renderNav();
    var main = document.getElementById('view');
    var view;
    if (!st.window) {
      view = h('p', { class: 'placeholder', text: 'No windowed series yet: the engine has not exported any.' });
    } else if (st.view === 'growth') {
      view = growthView(st.window);
    } else if (st.view === 'retention') {
      view = retentionView(st.window);
    } else {
      view = supportView(st.window);
    }
    main.replaceChildren(view);
    health();
    var asOf = document.getElementById('as-of');
    var clock = st.data.raw.clock_seconds;
    asOf.textContent = finite(clock)
      ? 'T = ' + new Date(clock * 1000).toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC')
      : 'no events yet (T not set)';
  }

  function setStatus(text, cls) {
    var s = document.getElementById('status');
    s.textContent = text;
    s.className = cls || '';
  }

  function onData(d) {
    var x = indexData(d);
    st.prev = st.data;
    st.data = x;
    st.seq += 1;
    x.values.forEach(function (v, k) {
      if (k.indexOf('_bucket{') < 0) {
        remember(k, v);
      }
    });
    render();
    setStatus('', '');
    body.dataset.state = 'ok';
  }

  function onError(e) {
    var msg = 'Cannot load api/series: ' + (e && e.message ? e.message : String(e));
    setStatus(msg + (st.data ? ' (showing the last answer)' : ''), 'error');
    body.dataset.state = 'error';
    if (!st.data) {
      document.getElementById('view').replaceChildren(h('p', { class: 'placeholder error', text: msg }));
    }
  }

  function countError(e) {
    body.dataset.errors = String((parseInt(body.dataset.errors, 10) || 0) + 1);
    if (window.console) {
      window.console.error(e);
    }
  }

  function schedule() {
    window.clearTimeout(st.timer);
    st.timer = window.setTimeout(refresh, refreshSeconds * 1000);
  }

  function refresh() {
    window.fetch('api/series', { cache: 'no-store', credentials: 'same-origin' })
      .then(function (r) {
        if (!r.ok) {
          var plain = /^text\/plain/.test(r.headers.get('content-type') || '');
          return r.text().then(function (t) {
            // The server's own answers are one plain line ("shutting down").
            var why = plain && t.trim() ? ': ' + t.trim().slice(0, 200) : ' ' + r.statusText;
            throw new Error('HTTP ' + r.status + why);
          });
        }
        return r.json();
      })
      .then(function (d) {
        try {
          onData(d);
        } catch (e) {
          // A bug of this page: counted as an error, and said.
          countError(e);
          onError(e);
        }
      }, onError)
      .then(schedule, schedule);
  }

  document.getElementById('nav').addEventListener('click', function (ev) {
    var a = ev.target.closest('a[data-view]');
    if (!a) {
      return;
    }
    ev.preventDefault();
    st.view = a.dataset.view;
    render();
  });
  document.getElementById('window').addEventListener('change', function (ev) {
    st.window = ev.target.value;
    render();
  });

  refresh();
})();
