/* The staff screen's script (edge/screens/templates/staff/base.html inlines it; its CSP hash is computed from
   this file). The staff name survives the automatic reloads for a while (sessionStorage, 10 minutes since last
   used) so staff need not retype it, but is not kept all day on a shared screen. Reloads wait while someone
   types. A card that needs a named staff member has its own name field (input.need), posted as it is: it is
   never filled in from the remembered name (else whoever stands at the kiosk could confirm with it), and a
   name typed there and left alone is cleared by the next reload (30 s after the last keystroke or focus). */
(function(){
var s=document.getElementById('staff'),K='meal-edge-staff',TTL=600000;
function load(){try{var v=JSON.parse(sessionStorage.getItem(K)||'null');
if(v&&Date.now()-v.t<TTL){return v.n;}}catch(e){}return '';}
function save(n){try{sessionStorage.setItem(K,JSON.stringify({n:n,t:Date.now()}));}catch(e){}}
if(s){s.value=load();s.addEventListener('input',function(){save(s.value);});}
var sent=false;
document.querySelectorAll('form.decide').forEach(function(f){f.addEventListener('submit',function(e){
if(sent){e.preventDefault();return;}sent=true;
var h=f.querySelector('input[type=hidden][name=by]');
if(s&&h){h.value=s.value;if(s.value){save(s.value);}}
setTimeout(function(){document.querySelectorAll('button').forEach(function(b){b.disabled=true;});},0);});});
var busy=0,HOLD=30000;
document.querySelectorAll('input.need').forEach(function(i){['focus','input'].forEach(function(t){
i.addEventListener(t,function(){busy=Date.now();});});});
/* A card this browser session has not shown before is highlighted (class new) and the page beeps twice:
   an 880 Hz tone made with WebAudio, no sound file. */
var SEEN='meal-edge-seen',seen=[],fresh=[];
try{seen=JSON.parse(sessionStorage.getItem(SEEN)||'[]');}catch(e){}
document.querySelectorAll('li.card').forEach(function(c){if(seen.indexOf(c.id)<0){fresh.push(c.id);
c.classList.add('new');}});
if(fresh.length){try{sessionStorage.setItem(SEEN,JSON.stringify(seen.concat(fresh).slice(-200)));}catch(e){}
beep();}
function beep(){try{var A=window.AudioContext||window.webkitAudioContext;if(!A){return;}var a=new A();
[0,0.35].forEach(function(t){var o=a.createOscillator(),g=a.createGain();o.type='sine';o.frequency.value=880;
g.gain.setValueAtTime(0.0001,a.currentTime+t);g.gain.exponentialRampToValueAtTime(0.4,a.currentTime+t+0.02);
g.gain.exponentialRampToValueAtTime(0.0001,a.currentTime+t+0.25);o.connect(g);g.connect(a.destination);
o.start(a.currentTime+t);o.stop(a.currentTime+t+0.3);});window.mealEdgeBeeps=(window.mealEdgeBeeps||0)+1;}
catch(e){}}
var wait=parseInt(document.body.getAttribute('data-refresh'),10)*1000;
function tick(){if(sent||document.activeElement===s||Date.now()-busy<HOLD){setTimeout(tick,wait);return;}
location.replace('/');}
if(wait>0){setTimeout(tick,wait);}
})();
